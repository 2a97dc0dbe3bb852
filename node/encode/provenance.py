"""Provenance of every result object: which equipment made it and which algorithm it ran.

Two layers are recorded, as the IHE AI Results (AIR) profile asks:

- the *node* is the equipment that creates the instance (General Equipment / Enhanced General
  Equipment: Manufacturer, Manufacturer's Model Name, Software Versions, Device Serial Number);
- the *algorithm* (the model of the card) is an item of the Contributing Equipment Sequence with
  Purpose of Reference (99IHE, 1630, "Processing Algorithm"), its name, version, manufacturer and a
  Device UID derived from the model file's sha256, so the UID changes exactly when the model changes.

highdicom's ``ContributingEquipment`` only accepts purposes from the DCM scheme, so the algorithm item is
built here as a plain dataset and appended after the SOP instance is constructed.
"""

from __future__ import annotations

import platform
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from typing import TypedDict

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DT

from node.analyse.card import Code, ModelCard

# IHE Radiology TF, AI Results: the purpose of reference of the algorithm's Contributing Equipment item.
PROCESSING_ALGORITHM = hd.sr.CodedConcept(value="1630", scheme_designator="99IHE", meaning="Processing Algorithm")
# CID 7162 "Surface Processing Algorithm Families" is what highdicom points to for the algorithm family.
ALGORITHM_FAMILY = codes.cid7162.ArtificialIntelligence  # (DCM 123110 "Artificial Intelligence")

# Name-based (RFC 4122 version 5) UUIDs for devices live in this namespace, so that the same model file
# always gets the same Device UID on every node, and no other input collides with it.
_DEVICE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:pacs-node:algorithm-device")

# Short Text (ST) holds at most 1024 characters; Long String (LO) 64.
_ST_MAX = 1024
_LO_MAX = 64


def _node_version() -> str:
    try:
        return metadata.version("pacs-node")
    except metadata.PackageNotFoundError:  # a source checkout that was never installed
        return "0+unknown"


def _hostname() -> str:
    return (platform.node() or "unknown")[:_LO_MAX]


class EquipmentKwargs(TypedDict):
    """Keyword arguments of the General Equipment module, as highdicom's constructors name them."""

    manufacturer: str
    manufacturer_model_name: str
    software_versions: str
    device_serial_number: str
    institution_name: str | None


@dataclass(frozen=True)
class Equipment:
    """The node as the equipment that creates result instances (General Equipment module)."""

    manufacturer: str = "pacs-node project"
    model_name: str = "pacs-node"
    software_version: str = field(default_factory=_node_version)
    serial_number: str = field(default_factory=_hostname)
    institution_name: str | None = None

    def highdicom_kwargs(self) -> EquipmentKwargs:
        """The General Equipment arguments every highdicom SOP class constructor takes, by their names."""
        return {
            "manufacturer": self.manufacturer,
            "manufacturer_model_name": self.model_name,
            "software_versions": self.software_version,
            "device_serial_number": self.serial_number,
            "institution_name": self.institution_name,
        }


def coded(code: Code) -> hd.sr.CodedConcept:
    """A card :class:`~node.analyse.card.Code` as a highdicom coded concept."""
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def device_uid(card: ModelCard) -> str:
    """Device UID of the algorithm: ``2.25.<uuid5>`` of the model's name, version and file sha256.

    Deterministic, so every result of one model file carries the same UID, and a retrained or replaced
    model (new sha256) gets a new one. 2.25 UIDs need no registered organisation root.
    """
    name = f"{card.model.name}\n{card.model.version}\n{card.model.sha256}"
    return f"2.25.{uuid.uuid5(_DEVICE_NAMESPACE, name).int}"


def algorithm_identification(card: ModelCard) -> hd.AlgorithmIdentificationSequence:
    """Segmentation Algorithm Identification Sequence for the SEG's segment descriptions."""
    return hd.AlgorithmIdentificationSequence(
        name=card.model.name[:_LO_MAX],
        family=ALGORITHM_FAMILY,
        version=card.model.version,
        source=card.model.manufacturer,
    )


def sr_algorithm_identification(card: ModelCard) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification for the SR's measurement groups."""
    return hd.sr.AlgorithmIdentification(
        name=card.model.name,
        version=card.model.version,
        family=ALGORITHM_FAMILY,
        manufacturer=card.model.manufacturer,
    )


def algorithm_equipment(card: ModelCard, when: datetime) -> Dataset:
    """The Contributing Equipment Sequence item that names the algorithm (IHE AIR)."""
    item = Dataset()
    item.Manufacturer = card.model.manufacturer
    item.ManufacturerModelName = card.model.name[:_LO_MAX]
    item.SoftwareVersions = card.model.version
    item.DeviceUID = device_uid(card)
    item.ContributionDateTime = DT(when)
    description = f"{card.model.description} Intended use: {card.model.intended_use}"
    item.ContributionDescription = description[:_ST_MAX]
    item.PurposeOfReferenceCodeSequence = [PROCESSING_ALGORITHM]
    return item


def add_algorithm_equipment(dataset: Dataset, card: ModelCard, when: datetime) -> None:
    """Append the algorithm's item to the dataset's Contributing Equipment Sequence (created if absent).

    highdicom has already put the source's acquisition equipment and itself there; the algorithm item
    goes last, after the library that wrote the instance.
    """
    item = algorithm_equipment(card, when)
    if "ContributingEquipmentSequence" in dataset:
        dataset.ContributingEquipmentSequence.append(item)
    else:
        dataset.ContributingEquipmentSequence = [item]
