"""The one error of the protobuf codec."""


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf object, or an object protobuf cannot carry."""
