"""Specification of src/progress.py: text progress bars, on stdout inside a notebook's kernel, else stderr."""

import subprocess
import sys

CODE = "import sys{}\nfrom src.progress import tqdm\nfor _ in tqdm(range(3), desc='steps', mininterval=0): pass"


def run(code: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)  # bytes: \r stays \r
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def test_in_a_terminal_the_bar_is_text_on_stderr():
    result = run(CODE.format(""))
    assert result.stdout == "" and "steps: 100%" in result.stderr and "3/3" in result.stderr


def test_in_a_jupyter_kernel_the_bar_is_text_on_stdout_not_a_widget():
    result = run(CODE.format("; sys.modules['ipykernel'] = type(sys)('ipykernel')"))  # as inside a kernel
    assert result.stderr == "" and "steps: 100%" in result.stdout and "\r" in result.stdout
