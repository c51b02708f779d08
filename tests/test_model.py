"""The input pipeline and the training loop of src.model."""

import keras
import numpy as np

from src import model
from src.model import DEFAULT_HPARAMS, build_cnn, fit, hparams_from_dict, make_dataset


def _labels_per_pass(dataset, batches_per_pass: int, passes: int) -> list[list[int]]:
    batches = [labels.numpy().tolist() for _, labels in dataset.take(batches_per_pass * passes)]
    return [sum(batches[start:start + batches_per_pass], [])
            for start in range(0, len(batches), batches_per_pass)]


def test_repeated_dataset_shows_every_image_once_per_pass_reshuffled():
    x = np.zeros((10, 28, 28, 1), np.uint8)
    y = np.arange(10)
    passes = _labels_per_pass(make_dataset(x, y, 4, shuffle=True, seed=1, repeat=True),
                              batches_per_pass=3, passes=3)
    assert all(sorted(labels) == list(range(10)) for labels in passes)
    assert len({tuple(labels) for labels in passes}) > 1  # a new order each pass


def test_fit_runs_every_batch_of_every_epoch_on_a_repeated_dataset():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 50)

    class CountBatches(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.counts = [*getattr(self, "counts", []), 0]

        def on_train_batch_end(self, batch, logs=None):
            self.counts[-1] += 1

    counter = CountBatches()
    model = build_cnn(hparams_from_dict({**DEFAULT_HPARAMS, "filters_2": 64}))
    history = fit(model, x, y, x[:20], y[:20], epochs=3, batch_size=16,
                  callbacks=[counter], verbose=0)
    assert counter.counts == [4, 4, 4]  # ceil(50 / 16): the last, short batch included
    assert len(history.history["val_accuracy"]) == 3


def test_dataset_turns_off_tf_data_autotuning():
    # With autotuning on, TensorFlow 2.21 keeps a dropped iterator waiting for the
    # autotune thread: 10-25 s idle after every fit (README, measured figures).
    x = np.zeros((4, 28, 28, 1), np.uint8)
    for repeat in (False, True):
        dataset = make_dataset(x, np.arange(4), 2, shuffle=True, repeat=repeat)
        assert dataset.options().autotune.enabled is False
    assert make_dataset(x, None, 2, shuffle=False).options().autotune.enabled is False


def test_auto_precision_is_bfloat16_only_on_a_cpu_with_bfloat16_instructions(monkeypatch):
    monkeypatch.setattr(model, "cpu_has_bfloat16", lambda: True)
    assert model.resolve_precision("auto") == "mixed_bfloat16"
    monkeypatch.setattr(model, "cpu_has_bfloat16", lambda: False)
    assert model.resolve_precision("auto") == "float32"
    assert model.resolve_precision("mixed_float16") == "mixed_float16"
    assert model.use_precision("mixed_bfloat16") == "mixed_bfloat16"
    built = build_cnn(hparams_from_dict(DEFAULT_HPARAMS))
    assert built.layers[-1].compute_dtype == "float32"  # probabilities stay float32
    assert any(layer.compute_dtype == "bfloat16" for layer in built.layers)


def test_clear_session_keeps_the_dtype_policy():
    model.use_precision("mixed_bfloat16")
    keras.backend.clear_session()
    assert keras.mixed_precision.global_policy().name == "float32"  # what Keras' own does
    model.use_precision("mixed_bfloat16")
    model.clear_session()
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"


def test_smoothed_loss_matches_categorical_crossentropy_on_smoothed_one_hot_labels():
    probs = np.array([[0.7, 0.2] + [0.0125] * 8, [0.1] * 10], np.float32)
    labels = np.array([0, 3])
    targets = np.full((2, 10), 0.01)
    targets[[0, 1], labels] = 0.91
    expected = -(targets * np.log(probs)).sum(axis=1).mean()
    loss = model.SmoothedSparseCrossentropy(0.1)(labels, probs)
    assert np.isclose(float(loss), expected, rtol=1e-5)
    plain = model.SmoothedSparseCrossentropy(0.0)(labels, probs)
    assert np.isclose(float(plain), -np.log(probs[[0, 1], labels]).mean(), rtol=1e-5)


def test_label_smoothing_is_in_the_compiled_model_and_survives_saving(tmp_path):
    smoothed = build_cnn(hparams_from_dict({**DEFAULT_HPARAMS, "label_smoothing": 0.1}))
    assert isinstance(smoothed.loss, model.SmoothedSparseCrossentropy)
    smoothed.save(tmp_path / "smoothed.keras")
    loaded = keras.models.load_model(tmp_path / "smoothed.keras")
    assert loaded.loss.smoothing == 0.1
    plain = build_cnn(hparams_from_dict({**DEFAULT_HPARAMS, "label_smoothing": 0.0}))
    assert plain.loss == "sparse_categorical_crossentropy"


def test_fit_trains_every_epoch_of_the_schedule():
    # The k-fold ensemble scores its validation part, so nothing may stop on it.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, 32)
    frozen = {**DEFAULT_HPARAMS, "filters_2": 32, "learning_rate": 0.0}  # val never improves
    history = fit(build_cnn(hparams_from_dict(frozen)), x, y, x[:8], y[:8], epochs=4,
                  batch_size=16, verbose=0)
    assert len(history.history["val_accuracy"]) == 4


def test_predicting_with_many_models_prints_no_retracing_paragraph():
    """Each model predicts through its own tf.function: TensorFlow called that retracing,
    a paragraph at a time, in every budgeted run, fidelity and the curve."""
    import logging

    heard = []

    class Collect(logging.Handler):
        def emit(self, record):
            heard.append(record.getMessage())

    handler = Collect()
    logging.getLogger("tensorflow").addHandler(handler)
    try:
        images = np.zeros((3, 28, 28, 1), np.uint8)
        for _ in range(7):
            model.predict(build_cnn(hparams_from_dict(
                {**DEFAULT_HPARAMS, "conv_blocks": 2, "filters_0": 16, "filters_1": 32,
                 "block_convs": 1})), images)
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)
    assert not [message for message in heard if "retracing" in message]


def test_other_retracing_is_still_said():
    import logging

    record = logging.LogRecord("tensorflow", logging.WARNING, __file__, 1, "6 out of the last 6 "
                               "calls to <function my_step at 0x1> triggered tf.function "
                               "retracing. Tracing is expensive", None, None)
    assert logging.getLogger("tensorflow").filter(record)
