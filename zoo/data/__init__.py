"""LightningDataModules and file formats."""

from zoo.data.responses import (
    NeuralResponseDataModule,
    ResponseDataModule,
    load_response_file,
    normalise_responses,
    validate_response_arrays,
)
from zoo.data.synthetic import SyntheticV1DataModule, simulate_v1, write_synthetic_v1

__all__ = [
    "NeuralResponseDataModule",
    "ResponseDataModule",
    "SyntheticV1DataModule",
    "load_response_file",
    "normalise_responses",
    "simulate_v1",
    "validate_response_arrays",
    "write_synthetic_v1",
]
