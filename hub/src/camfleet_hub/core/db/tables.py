"""Every domain's SQL tables, imported once so ``Base.metadata`` holds the whole schema.

Each domain keeps its tables in its own ``models.py``; sessions (relationships between domains resolve by class
name) and Alembic need all of them registered, which importing this module does.
"""

from camfleet_hub.auth import models as auth_models
from camfleet_hub.compat import models as compat_models
from camfleet_hub.datasets import models as datasets_models
from camfleet_hub.fleet import models as fleet_models
from camfleet_hub.imports import models as imports_models
from camfleet_hub.ingest import models as ingest_models
from camfleet_hub.serving import models as serving_models
from camfleet_hub.training import models as training_models

DOMAINS = (
    auth_models,
    compat_models,
    datasets_models,
    fleet_models,
    imports_models,
    ingest_models,
    serving_models,
    training_models,
)
