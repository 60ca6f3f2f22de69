"""A griffe extension: SpeechBrain's docstring section titles read as numpydoc's.

dmha writes its docstrings as SpeechBrain does, numpy style with ``Arguments``
and ``Example`` where numpydoc says ``Parameters`` and ``Examples``. Griffe's
numpy parser knows only numpydoc's titles and would show the others as plain
admonitions (the arguments unparsed, the doctests as prose), so the API pages
rename them before griffe parses the docstring. The source stays as it is.
"""

import re

import griffe

NUMPYDOC_TITLES = {"Arguments": "Parameters", "Example": "Examples"}
SECTION = re.compile(r"^(Arguments|Example)\n-+$", re.MULTILINE)


def numpydoc_titles(docstring):
    """``docstring`` with SpeechBrain's section titles renamed to numpydoc's.

    Arguments
    ---------
    docstring : str
        A cleaned (dedented) docstring.

    Returns
    -------
    str
        The same text, its ``Arguments`` and ``Example`` sections renamed.

    Example
    -------
    >>> numpydoc_titles("Sum.\\n\\nArguments\\n---------\\nx : int\\n    A number.")
    'Sum.\\n\\nParameters\\n----------\\nx : int\\n    A number.'
    """

    def rename(match):
        title = NUMPYDOC_TITLES[match.group(1)]
        return title + "\n" + "-" * len(title)

    return SECTION.sub(rename, docstring)


class SpeechBrainSections(griffe.Extension):
    """Renames the sections of every docstring griffe loads (see the module)."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = numpydoc_titles(obj.docstring.value)
