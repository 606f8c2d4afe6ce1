"""What the clients answer, as plain data: the same for gRPC and REST.

TensorFlow-free: `serving.rest_client` builds these from JSON, `serving.client`
from protos, and the tests compare the two.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A signature input or output: graph tensor name, dtype, shape."""

    name: str
    dtype: Optional[np.dtype]     # None for DT_INVALID (e.g. the init op)
    shape: Optional[tuple]        # None if the rank is unknown; None sizes


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    inputs: dict                  # alias -> TensorSpec
    outputs: dict                 # alias -> TensorSpec
    method_name: str


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """GetModelMetadata's answer: which version, and its signatures."""

    name: str
    version: int
    signatures: dict              # name -> SignatureInfo
    signature_defs: dict          # name -> SignatureDef as served: the proto
    #                               (gRPC) or its JSON object (REST)


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """One entry of GetModelStatus."""

    version: int
    state: str                    # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str               # "OK" or a status code name
    error_message: str


@dataclasses.dataclass(frozen=True)
class Prediction:
    """Outputs of one Predict call and the version that answered it."""

    outputs: dict
    model_name: str
    model_version: Optional[int]
    signature_name: str
