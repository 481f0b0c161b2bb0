"""`auto` in a Ray actor follows the GPUs Ray reserved for it (Ray 2.60 shows every GPU
of the node to actors that reserved none). Real Ray, a node advertising one fake GPU;
torch is told CUDA is there, as it would be on a GPU node."""


def test_auto_is_cpu_in_an_actor_with_no_gpu_reserved(fake_gpu_ray):
    import ray

    @ray.remote
    class Probe:
        def device(self):
            import torch

            from emodist.devices import auto_device

            torch.cuda.is_available = lambda: True  # a GPU node: CUDA is visible to every process
            return auto_device(), ray.get_gpu_ids()

    without = Probe.options(num_cpus=0.5, num_gpus=0).remote()
    with_one = Probe.options(num_cpus=0.5, num_gpus=1).remote()
    assert ray.get(without.device.remote()) == ("cpu", [])
    device, ids = ray.get(with_one.device.remote())
    assert device == "cuda" and len(ids) == 1


def test_auto_outside_ray_follows_torch(monkeypatch):
    import torch

    from emodist.devices import auto_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert auto_device() == "cpu"


def test_a_cuda_stage_without_usable_cuda_says_so_in_one_line(monkeypatch):
    import pytest
    import torch

    from emodist.devices import require_cuda
    from emodist.models import registry

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError) as err:
        registry._device("cuda", "labeler")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("labeler.device=cuda but this process sees no usable CUDA device (torch ")
    assert "check `nvidia-smi`" in msg
    assert registry._device("auto", "labeler") == "cpu" and registry._device("cpu", "labeler") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    require_cuda("labeler.device")  # nothing to say
