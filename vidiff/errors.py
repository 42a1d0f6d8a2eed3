"""The root of vidiff's own errors. Each error class of the library derives from :class:`VidiffError`
(and from the built-in class that fits it, so `except ValueError` keeps working); the command line
reports exactly these as one-line messages and lets every other exception, a bug, keep its traceback."""


class VidiffError(Exception):
    """Bad input, named with what to do about it: a wrong shape, a missing file, an unknown name."""


class ConditioningError(VidiffError, ValueError):
    """A condition that does not fit the model or the request: a prompt for a class model, an unknown
    class, known frames of the wrong shape, a context longer than the model's window."""


class DataError(VidiffError, ValueError):
    """Bad or unusable input data. The message names the file or folder at fault, what is wrong with
    it, and what to do about it."""


class ConfigError(VidiffError, ValueError):
    """An invalid configuration: unknown key, wrong type, impossible shape, unknown preset. The message
    names the setting (section.key) at fault."""


class RemovedOptionError(ConfigError):
    """A setting of an earlier vidiff that this one no longer has, in a configuration that needs it.
    The message names the last version with it."""


class DivergenceError(VidiffError, FloatingPointError):
    """Training produced a loss, gradient or weights that are not finite. The message names the step and
    the last good checkpoint, which is never replaced by non-finite weights."""


class OutputError(VidiffError, OSError):
    """An output that cannot be written: a file where a folder is expected, a read-only folder, a full
    disk. The message names the path and what to do; `errno` is the system's error number, if any."""


class CheckpointError(VidiffError, FileNotFoundError):
    """A missing or unreadable checkpoint, with what to do about it."""


class HubError(VidiffError, OSError):
    """A model that cannot be fetched from or published to the Hub, with what to do about it."""


class PublishError(VidiffError, ValueError):
    """A model that cannot be prepared for the Hub: a folder in the way, a file that is not an eval report."""


class RunLockedError(VidiffError):
    """Another process holds a run folder's lock."""


class SamplerError(VidiffError, ValueError):
    """An unknown sampler, or an option the chosen sampler does not take."""


class TextEncoderError(VidiffError, ValueError):
    """A text encoder or an embedding cache cannot be found, loaded, or does not match."""


class ShortVideoError(DataError):
    """A video decoded to fewer frames (slots) than its index promised."""

    def __init__(self, message: str, frames_decoded: int):
        super().__init__(message)
        self.frames_decoded = frames_decoded


class MetricsError(VidiffError, ValueError):
    """Inputs a metric cannot use: too few clips or frames, wrong shapes, an unknown metric."""


class MissingWeightsError(VidiffError, FileNotFoundError):
    """Network weights (I3D, InceptionV3) that are not installed or not at the given path."""


class StudioError(VidiffError):
    """A request the studio refuses; its message is shown in the page. `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
