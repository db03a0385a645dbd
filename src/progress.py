"""Progress bars: tqdm's text bar everywhere, in a terminal and in a notebook.

tqdm.auto would draw a widget in Jupyter. Its output stays in the saved notebook, but its state does not (JupyterLab
does not save widget state by default): reopened, each finished bar reads "Error displaying widget: model not found".
A text bar updates in place while the cell runs (the \\r it writes is applied by JupyterLab, and by src/report.py's
nbclient when it saves), and leaves its last line as plain text.

    from src.progress import tqdm
"""

from __future__ import annotations

import sys

from tqdm.std import tqdm as std_tqdm


class tqdm(std_tqdm):  # noqa: N801 - tqdm's own name, so that every call site reads as tqdm's documentation
    """tqdm's text bar; in a Jupyter kernel it writes to stdout, because JupyterLab shows stderr as an error (red)."""

    def __init__(self, *args, **kwargs) -> None:
        if "ipykernel" in sys.modules:
            kwargs.setdefault("file", sys.stdout)
        super().__init__(*args, **kwargs)
