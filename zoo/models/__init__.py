"""Paper models, one module per paper; each is a LightningModule the CLI can pick by class name."""

from zoo.models.cnn_v1 import CNNV1
from zoo.models.gcal import Gcal
from zoo.models.lissom import Lissom
from zoo.models.retina_vvs import RetinaVVS
from zoo.models.rotequi_v1 import RotEquiV1
from zoo.models.spatial_dense import RegularConvNet, SpatialDenseNet
from zoo.models.stringer import StringerConvFC, TiltCNN

__all__ = ["CNNV1", "Gcal", "Lissom", "RegularConvNet", "RetinaVVS", "RotEquiV1", "SpatialDenseNet", "StringerConvFC",
           "TiltCNN"]
