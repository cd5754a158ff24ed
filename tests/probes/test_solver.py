import torch

from undertow.probes.solver import lbfgs


def test_batched_quadratics_converge_independently():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64)
    H = A @ A.transpose(-1, -2) + torch.eye(6, dtype=torch.float64) * torch.tensor([1e-2, 1.0, 10.0])[:, None, None]
    b = torch.randn(4, 3, 6, generator=g, dtype=torch.float64)

    def fg(x):
        Hx = (H @ x.unsqueeze(-1)).squeeze(-1)
        return 0.5 * (x * Hx).sum(-1) - (b * x).sum(-1), Hx - b

    res = lbfgs(fg, torch.zeros(4, 3, 6, dtype=torch.float64), tol=1e-9, max_iter=500)
    want = torch.linalg.solve(H, b.unsqueeze(-1)).squeeze(-1)
    # an eigenvalue of ~1e-2 and f's float64 resolution (~1e-15) limit x to ~1e-6: the solver stops
    # there ("stalled") rather than spinning to max_iter
    torch.testing.assert_close(res.x, want, atol=1e-5, rtol=0)
    assert bool(res.converged.all()) and res.n_iter < 100 and float(res.grad_max.max()) < 1e-5


def test_preconditioner_with_exact_inverse_converges_in_one_step():
    H = torch.diag(torch.tensor([1.0, 100.0, 1e4], dtype=torch.float64)).expand(2, 3, 3)
    b = torch.ones(2, 3, dtype=torch.float64)

    def fg(x):
        Hx = (H @ x.unsqueeze(-1)).squeeze(-1)
        return 0.5 * (x * Hx).sum(-1) - (b * x).sum(-1), Hx - b

    res = lbfgs(fg, torch.zeros(2, 3, dtype=torch.float64), precond=lambda q: q / torch.diagonal(H, dim1=-2, dim2=-1),
                tol=1e-10)
    assert res.n_iter == 1
    torch.testing.assert_close(res.x, b / torch.tensor([1.0, 100.0, 1e4], dtype=torch.float64))
