"""Evaluation, calibration, comparison and explanation of trained models, one module each:

- :mod:`~skinzoo.evaluate.predict`: models and images in, class probabilities out
- :mod:`~skinzoo.evaluate.evaluation`: metrics of a model on one split (``evaluate_model``)
- :mod:`~skinzoo.evaluate.fitted`: the threshold and temperature fitted on the validation split
- :mod:`~skinzoo.evaluate.gallery`: the HTML report with its Grad-CAM gallery
- :mod:`~skinzoo.evaluate.compare`: the leaderboard of several runs
- :mod:`~skinzoo.metrics`, :mod:`~skinzoo.evaluate.calibration`,
  :mod:`~skinzoo.evaluate.gradcam`, :mod:`~skinzoo.evaluate.report`: the pure pieces they use

Import from the module itself; this package defines nothing.
"""
