"""The base class of errors in what a user gave (data, audio, a model path, an output folder): a script reports
one as one line (exit status 1), not a traceback. Recipe and usage errors are configs.RecipeError (status 2)."""


class InputError(Exception):
    """Input the project cannot use; the message names it (file, row, folder, model) and what was expected."""
