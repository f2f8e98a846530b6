import subprocess
import sys


def test_import_memgeo_and_mixture_paths_do_not_import_diffusers():
    code = (
        "import sys, memgeo, memgeo.detect, memgeo.gmm, memgeo.geometry, memgeo.scan, memgeo.io, memgeo.mitigate, memgeo.bench\n"
        "from memgeo.gmm import ConditionalGaussianMixture\n"
        "from memgeo.detect import guidance_norm, initial_noise\n"
        "m = ConditionalGaussianMixture.memorization_scenario()\n"
        "guidance_norm(m, 0, initial_noise(m, 2))\n"
        "assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
