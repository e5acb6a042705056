"""dockyard's built-in image classifier: SageMaker's image-classification algorithm on PyTorch.

train (the entry point, `python -m image_classification.train`), config (the
job's files and hyperparameters), data (the input formats), model (network,
starting weights, artifact), distributed (hosts as one job), checkpoint.
"""
