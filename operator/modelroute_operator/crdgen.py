"""`python -m modelroute_operator.crdgen`: the CRD generator's command (the generator is `logic.crdgen`).

Kept at this path because the generated files name it in their header and the developer docs use it.
"""

import sys

from modelroute_operator.logic.crdgen import main

if __name__ == "__main__":
    sys.exit(main())
