"""Every domain's SQL tables, imported once so ``Base.metadata`` holds the whole schema.

Each domain keeps its tables in its own ``models.py``; sessions (relationships between domains resolve by class
name) and Alembic need all of them registered, which importing this module does.
"""

from camfleet_hub.auth import models as auth_models  # noqa: F401
from camfleet_hub.compat import models as compat_models  # noqa: F401
from camfleet_hub.datasets import models as datasets_models  # noqa: F401
from camfleet_hub.fleet import models as fleet_models  # noqa: F401
from camfleet_hub.imports import models as imports_models  # noqa: F401
from camfleet_hub.ingest import models as ingest_models  # noqa: F401
from camfleet_hub.serving import models as serving_models  # noqa: F401
from camfleet_hub.training import models as training_models  # noqa: F401
