"""LightningDataModules and file formats."""

from zoo.data.cadena import Cadena2019DataModule, read_cadena_file, write_simulated_cadena
from zoo.data.images import (
    CIFAR10DataModule,
    ImageClassificationDataModule,
    ImageFolderDataModule,
    shift_and_flip,
)
from zoo.data.lissom import LissomDataModule, map_gratings
from zoo.data.responses import (
    NeuralResponseDataModule,
    ResponseDataModule,
    load_response_file,
    normalise_responses,
    validate_response_arrays,
)
from zoo.data.sensorium import SensoriumDataModule, read_sensorium_scan, write_simulated_sensorium
from zoo.data.stringer import (
    SimulatedStringerDataModule,
    StringerDataModule,
    load_stringer_file,
    simulate_stringer,
    validate_stringer_arrays,
    write_simulated_stringer,
)
from zoo.data.synthetic import SyntheticV1DataModule, simulate_v1, write_synthetic_v1
from zoo.data.tilt import TiltGratingsDataModule, tilt_gratings

__all__ = [
    "CIFAR10DataModule",
    "Cadena2019DataModule",
    "ImageClassificationDataModule",
    "ImageFolderDataModule",
    "LissomDataModule",
    "NeuralResponseDataModule",
    "ResponseDataModule",
    "SensoriumDataModule",
    "SimulatedStringerDataModule",
    "StringerDataModule",
    "SyntheticV1DataModule",
    "TiltGratingsDataModule",
    "load_response_file",
    "load_stringer_file",
    "map_gratings",
    "normalise_responses",
    "read_cadena_file",
    "read_sensorium_scan",
    "simulate_stringer",
    "shift_and_flip",
    "simulate_v1",
    "tilt_gratings",
    "validate_response_arrays",
    "validate_stringer_arrays",
    "write_simulated_cadena",
    "write_simulated_sensorium",
    "write_simulated_stringer",
    "write_synthetic_v1",
]
