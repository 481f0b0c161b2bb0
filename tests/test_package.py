import subprocess
import sys


def test_import_is_cheap_and_the_public_names_resolve():
    code = ("import sys, emodist; heavy = [m for m in ('ray', 'torch', 'av', 'vllm', 'transformers') if m in sys.modules];"
            "print(heavy); assert emodist.load_config().mode == 'msce' and callable(emodist.run)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
