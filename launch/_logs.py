"""Console hygiene shared by the launch scripts."""

from absl import flags, logging


def quiet() -> None:
    """Orbax logs every checkpoint step at INFO through absl: keep the console to progress bars and
    results unless the user asks for logs with --verbosity."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
