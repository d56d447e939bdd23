"""The errors a user can fix: a script reports each as one line, no traceback (see audio_recipes.cli).

InputError (exit status 1): data, audio, a model path, an output folder the project cannot use; the message names
it and what was expected. RecipeError (exit status 2): a recipe or command line that cannot be run.
"""


class InputError(Exception):
    """Input the project cannot use; the message names it (file, row, folder, model) and what was expected."""


class DataError(InputError, ValueError):
    """A data file or row that does not have the shape the task expects; names the file and row."""


class RecipeError(ValueError):
    """A recipe or command line that cannot be run; raised before any model loads."""
