"""Evaluation metrics: FVD / KVD on Kinetics-400 I3D logits, frame-level FID / KID / IS on the
FID InceptionV3. The driver over files and tensors is `vidiff.metrics.evaluate`."""

from vidiff.metrics.frechet import frechet_distance, frechet_distance_from_feats, gaussian_stats
from vidiff.metrics.fvd import extract_i3d_features, fvd, i3d_logits, kvd, preprocess_for_i3d
from vidiff.metrics.i3d import InceptionI3d, load_i3d
from vidiff.metrics.inception import FIDInceptionV3, extract_inception_features, load_inception
from vidiff.metrics.scores import inception_score, kernel_distance

__all__ = [
    "FIDInceptionV3",
    "InceptionI3d",
    "extract_i3d_features",
    "extract_inception_features",
    "frechet_distance",
    "frechet_distance_from_feats",
    "fvd",
    "gaussian_stats",
    "i3d_logits",
    "inception_score",
    "kernel_distance",
    "kvd",
    "load_i3d",
    "load_inception",
    "preprocess_for_i3d",
]
