"""The collectives under a real 2-process gloo group match single-process results."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from tipsv2_sdk.pretrain import distributed
from tipsv2_sdk.pretrain.losses import ContrastiveLoss

WORKER = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    from tipsv2_sdk.pretrain import distributed
    from tipsv2_sdk.pretrain.losses import ContrastiveLoss, DINOLoss, IBOTPatchLoss


    def reference(image, text, tau):
        """Single-process CLIP loss (no collectives), for comparison."""
        import torch.nn.functional as F
        logits = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t() / tau
        labels = torch.arange(len(image))
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


    def data():
        g = torch.Generator().manual_seed(0)
        return torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g), torch.randn(6, 5, generator=g)


    def worker(rank, init_file):
        dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=2)
        assert distributed.is_distributed() and distributed.rank() == rank and distributed.world_size() == 2
        image, text, logits = data()
        rows = slice(3 * rank, 3 * rank + 3)

        # contrastive: mean of per-rank losses and averaged gradients == single-process values
        x = image[rows].clone().requires_grad_(True)
        y = text[rows].clone().requires_grad_(True)
        tau = torch.tensor(0.3, requires_grad=True)
        loss = ContrastiveLoss()(x, y, tau)
        loss.backward()
        fx, fy, ft = image.clone().requires_grad_(True), text.clone().requires_grad_(True), torch.tensor(0.3, requires_grad=True)
        full = reference(fx, fy, ft)
        full.backward()
        assert torch.allclose(distributed.all_reduce_mean(loss.detach()), full.detach(), atol=1e-6)
        assert torch.allclose(x.grad / 2, fx.grad[rows], atol=1e-6), (x.grad / 2, fx.grad[rows])
        assert torch.allclose(y.grad / 2, fy.grad[rows], atol=1e-6)
        assert torch.allclose(distributed.all_reduce_mean(tau.grad), ft.grad, atol=1e-6)

        # all_reduce_mean leaves its input alone
        value = torch.tensor([float(rank + 1)])
        assert distributed.all_reduce_mean(value).item() == 1.5 and value.item() == rank + 1

        # DINO centre: synchronised batch mean
        dino = DINOLoss(5, center_momentum=0.5)
        dino.update_center(logits[rows])
        assert torch.allclose(dino.center, 0.5 * logits.mean(0, keepdim=True), atol=1e-6)

        # iBOT centre with a different number of masked tokens per rank
        patch = logits.view(2, 3, 5)[rank].unsqueeze(0)  # (1, 3, 5)
        mask = torch.tensor([[True, False, False]]) if rank == 0 else torch.tensor([[True, True, True]])
        ibot = IBOTPatchLoss(5, center_momentum=0.0, all_tokens=False)
        ibot.update_center(patch, mask)
        expected = torch.cat([logits[0:1], logits[3:6]]).mean(0)
        assert torch.allclose(ibot.center.flatten(), expected, atol=1e-6)
        # Sinkhorn-Knopp over the global batch == over the concatenated rows in one process
        from tipsv2_sdk.pretrain.losses import sinkhorn_knopp
        q = torch.exp(logits / 0.5).t()
        q /= q.sum()
        for _ in range(3):
            q /= q.sum(1, keepdim=True) * 5
            q /= q.sum(0, keepdim=True) * 6
        expected = (q * 6).t()
        assert torch.allclose(sinkhorn_knopp(logits[rows], 0.5), expected[rows], atol=1e-5)
        dist.destroy_process_group()


    if __name__ == "__main__":
        mp.spawn(worker, args=(sys.argv[1],), nprocs=2, join=True)
''')


def test_single_process_collectives_are_identities():
    x = torch.randn(3, 2)
    assert not distributed.is_distributed() and distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.all_gather_with_grad(x) is x
    mean = distributed.all_reduce_mean(x)
    assert torch.equal(mean, x) and mean is not x
    assert ContrastiveLoss()(x, x, torch.tensor(0.1)).item() > 0


def test_two_rank_gloo_matches_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "rendezvous")], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
