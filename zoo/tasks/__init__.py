"""Base LightningModules shared by the paper models of one kind."""

from zoo.tasks.base import Task
from zoo.tasks.classification import ClassificationTask
from zoo.tasks.response import CoreReadoutModel, ResponseTask
from zoo.tasks.selforganizing import SelfOrganizingTask

__all__ = ["Task", "ClassificationTask", "CoreReadoutModel", "ResponseTask", "SelfOrganizingTask"]
