"""dockyard: SageMaker-style managed training jobs on hardware you own.

This package is the pure domain: specs, the container contract, statuses,
catalogs, errors and settings. It performs no I/O and imports nothing from
flows/, tasks/ or infra/.
"""

__version__ = "0.1.0"
