"""The operator's I/O clients: the Kubernetes API (`kube`, `leader`), the sidecars' admin ports (`sync`),
replicas' health endpoints (`probe`), and the per-namespace work queue. They import `logic`, never
`runtime`."""
