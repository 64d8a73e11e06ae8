"""Image + metadata models: any zoo model with a small metadata branch fused before its head.

::

    image ─► (the zoo model up to its features) ─────────────────────┐
                                                                      ├─► concat ─► head ─► predictions
    metadata ─► metadata_dropout ─► metadata_dense (ReLU) ────────────┘   (name: "fusion")

- Features: the ``embedding`` layer (global pool) when the model has one, and then the model's
  head (``head_*`` layers, same names) is rebuilt on the fused vector, so two-stage training
  (a head trained on cached embeddings + metadata) copies into it by name; otherwise the input of
  the ``predictions`` layer, and a new ``predictions`` layer is made on the fused vector.
- ``metadata_dropout`` (:class:`MetadataDropout`) hides WHOLE fields at training time: the field's
  slots become 0 and its missing indicator 1, exactly how a missing value is encoded, so the model
  learns to predict with any field absent (and with no metadata at all).
- The encoding (field order, categories, scales) is stored in that layer's config, so a saved
  ``.keras`` file knows how to encode raw values even without its run directory.
- Only registered, serialisable layers (no Lambda): the file loads with ``safe_mode=True``.
"""

from __future__ import annotations

from skinzoo.data.metadata import DEFAULT_DROPOUT, MetadataEncoding
from skinzoo.errors import ModelError
from skinzoo.models.graph import input_name
from skinzoo.models.layers import keras, predictions
from skinzoo.models.transfer import EMBEDDING, build_head, embedding_layer

ops = keras.ops
METADATA_INPUT = "metadata"
METADATA_UNITS = 32
FUSION = "fusion"
BRANCH_LAYERS = ("metadata_dropout", "metadata_dense")


@keras.saving.register_keras_serializable(package="skinzoo")
class MetadataDropout(keras.layers.Layer):
    """Training only: each field of each sample is hidden with probability ``rate`` (its slots
    set to 0, its missing indicator to 1). Identity at inference. Carries the encoding."""

    def __init__(self, encoding: dict, rate: float = DEFAULT_DROPOUT, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"metadata dropout rate must be in [0, 1), got {rate!r}")
        self.encoding = MetadataEncoding.from_dict(encoding).to_dict()
        self.rate = float(rate)
        self.seed = seed
        parsed = MetadataEncoding.from_dict(self.encoding)
        self._n_fields = len(parsed.fields)
        self._field_of_column = parsed.field_of_column()
        indicator = [0.0] * parsed.width
        for i in parsed.missing_columns():
            indicator[i] = 1.0
        self._indicator = indicator
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        x = ops.cast(inputs, "float32")
        if not training or self.rate == 0:
            return x
        batch = ops.shape(x)[0]
        hide = ops.cast(keras.random.uniform((batch, self._n_fields), seed=self.seed_generator)
                        < self.rate, "float32")
        hide = ops.take(hide, ops.convert_to_tensor(self._field_of_column, "int32"), axis=1)
        indicator = ops.convert_to_tensor(self._indicator, "float32")
        return x * (1.0 - hide) + hide * indicator

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "encoding": self.encoding, "rate": self.rate,
                "seed": self.seed}


def metadata_input(encoding: MetadataEncoding, name: str = METADATA_INPUT):
    return keras.Input(shape=(encoding.width,), name=name, dtype="float32")


def metadata_branch(meta, encoding: MetadataEncoding, dropout: float = DEFAULT_DROPOUT,
                    units: int = METADATA_UNITS):
    """metadata input -> field dropout -> Dense(units, ReLU): the branch joined to the image."""
    x = MetadataDropout(encoding.to_dict(), dropout, name="metadata_dropout")(meta)
    return keras.layers.Dense(units, activation="relu", name="metadata_dense")(x)


def fusion_point(model):
    """``(features tensor, head options or None)``: where the metadata joins ``model``."""
    names = [layer.name for layer in model.layers]
    if "predictions" not in names:
        raise ModelError(f"model {model.name!r} has no 'predictions' layer to fuse metadata before",
                         "metadata fusion works on zoo models (skinzoo models)")
    if METADATA_INPUT in names or any(n in names for n in BRANCH_LAYERS):
        raise ModelError(f"model {model.name!r} already has a metadata input")
    if EMBEDDING in names:
        after = names[names.index(EMBEDDING) + 1:]
        dense = [model.get_layer(n).units for n in after if n.startswith("head_dense")
                 and not n.endswith("_dropout")]
        drop = [model.get_layer(n).rate for n in after if n == "head_dropout"]
        return model.get_layer(EMBEDDING).output, {"dense": tuple(dense),
                                                    "dropout": drop[0] if drop else 0.0}
    return model.get_layer("predictions").input, None


def with_metadata(model, encoding: MetadataEncoding, num_classes: int,
                  dropout: float = DEFAULT_DROPOUT, units: int = METADATA_UNITS):
    """A two-input model ``[image, metadata] -> predictions`` from a single-input zoo model.

    The image branch is ``model``'s own layers (shared, one flat graph: Grad-CAM finds its last
    conv at top level); the head after the fusion point is rebuilt with the same layer names.
    """
    if len(model.inputs) != 1:
        raise ModelError(f"model {model.name!r} has {len(model.inputs)} inputs; metadata fusion "
                         "needs a single-image model")
    features, head = fusion_point(model)
    meta = metadata_input(encoding)
    fused = keras.layers.Concatenate(name=FUSION)([features, metadata_branch(meta, encoding,
                                                                             dropout, units)])
    if head is not None:
        outputs = build_head(fused, num_classes, head["dense"], head["dropout"])
    else:
        outputs = predictions(fused, num_classes)
    return keras.Model([model.inputs[0], meta], outputs, name=f"{model.name}_meta")


def head_with_metadata(embedding_dim: int, encoding: MetadataEncoding, num_classes: int,
                       dense=(256, 128), dropout=0.5, meta_dropout: float = DEFAULT_DROPOUT,
                       units: int = METADATA_UNITS):
    """Two-stage training's head on ``[embedding_input, metadata]`` with the same layer names as
    :func:`with_metadata` builds, so its weights copy into the full model by name."""
    emb = keras.Input(shape=(int(embedding_dim),), name="embedding_input")
    meta = metadata_input(encoding)
    fused = keras.layers.Concatenate(name=FUSION)([emb, metadata_branch(meta, encoding,
                                                                        meta_dropout, units)])
    return keras.Model([emb, meta], build_head(fused, num_classes, dense, dropout), name="head")


def encodings_of(model) -> dict[str, MetadataEncoding]:
    """``{input name: encoding}`` for every metadata input of ``model`` (nested models too):
    read from the :class:`MetadataDropout` layer each metadata input feeds."""
    found = {}
    for owner, layer in _walk(model):
        if isinstance(layer, MetadataDropout):
            name = input_name(owner, layer.input) or METADATA_INPUT
            found[name] = MetadataEncoding.from_dict(layer.encoding, f"layer {layer.name}")
    return found


def _walk(model):
    """``(model owning the layer, layer)`` for every layer, nested models included."""
    for layer in getattr(model, "layers", []):
        yield model, layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)


FUSION_LAYERS = (METADATA_INPUT, *BRANCH_LAYERS, FUSION)  # every layer the metadata adds


def image_feature_extractor(model):
    """image -> ``embedding`` of a (fused or plain) zoo model: what two-stage training caches."""
    embedding = embedding_layer(model)
    image = next(t for t in model.inputs if len(t.shape) == 4)
    return keras.Model(image, embedding.output, name=f"{model.name}_features")
