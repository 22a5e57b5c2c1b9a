"""Keypoint equivariance losses (paper Sec. 3.4, "L_E"; FOMM's equivariance constraints).

A random thin-plate-spline transform ``T`` (affine part plus TPS on a control grid, FOMM form) warps
the driving frame; the detector run on the warped frame must give keypoints that ``T`` maps back to
the driving keypoints, and jacobians that agree through ``dT/dz``:

* value:    ``w_v * mean |kp_d - T(kp_t)|``
* jacobian: ``w_j * mean |I - inv(J_d) @ (dT/dz(kp_t) @ J_t)|``

Conventions (official code): coordinates (x, y) in [-1, 1]; ``T(z) = A z + b + sum_p c_p * r(d_p)``
with ``d_p = |z_x - p_x| + |z_y - p_y|`` (**L1** distance), ``r(d) = d^2 log(d + 1e-6)``, and the same
scalar TPS displacement added to both x and y; the frame is resampled with
``grid_sample(frame, T(grid), padding_mode='reflection', align_corners=False)`` on the
``2 i / (n - 1) - 1`` pixel grid.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mrfa.ops.grid import make_coordinate_grid
from mrfa.types import Keypoints


class RandomTPSTransform:
    """A batch of FOMM random TPS transforms (a plain container of tensors, not a module).

    Args:
        theta: [B, 2, 3] affine part ``[A | b]``.
        control_points: [1, P, P, 2] or [N, 2] TPS control points (x, y), or None for affine only.
        control_params: [B, 1, N] TPS weights (one per control point), or None for affine only.
    """

    def __init__(self, theta: Tensor, control_points: Optional[Tensor] = None,
                 control_params: Optional[Tensor] = None) -> None:
        if theta.dim() != 3 or theta.shape[1:] != (2, 3):
            raise ValueError(f"theta must be [B, 2, 3], got {tuple(theta.shape)}.")
        if (control_points is None) != (control_params is None):
            raise ValueError("control_points and control_params must be given together (TPS) or both None.")
        self.theta = theta
        self.batch = theta.shape[0]
        self.control_points = None if control_points is None else control_points.reshape(-1, 2)  # [N, 2]
        self.control_params = control_params  # [B, 1, N]
        if control_params is not None:
            n = self.control_points.shape[0]
            if control_params.shape != (self.batch, 1, n):
                raise ValueError(f"control_params must be [{self.batch}, 1, {n}], got {tuple(control_params.shape)}.")

    @classmethod
    def sample(cls, batch: int, *, sigma_affine: float, sigma_tps: Optional[float] = None,
               points_tps: Optional[int] = None, generator: Optional[torch.Generator] = None,
               device: Optional[torch.device] = None, dtype: torch.dtype = torch.float32) -> "RandomTPSTransform":
        """Draw ``theta = I + N(0, sigma_affine)`` then TPS weights ``N(0, sigma_tps)`` on a
        ``points_tps x points_tps`` grid over [-1, 1]^2 (official draw order; with the same generator
        state this reproduces the official transform). TPS is off when sigma_tps/points_tps is None.
        """
        noise = torch.randn(batch, 2, 3, generator=generator, dtype=dtype) * sigma_affine
        theta = (noise + torch.eye(2, 3, dtype=dtype).view(1, 2, 3)).to(device)
        if sigma_tps is None or points_tps is None:
            return cls(theta)
        control_points = make_coordinate_grid(points_tps, points_tps, dtype=dtype).unsqueeze(0).to(device)
        params = torch.randn(batch, 1, points_tps**2, generator=generator, dtype=dtype) * sigma_tps
        return cls(theta, control_points, params.to(device))

    def to(self, device: torch.device) -> "RandomTPSTransform":
        cp = None if self.control_points is None else self.control_points.to(device)
        params = None if self.control_params is None else self.control_params.to(device)
        return RandomTPSTransform(self.theta.to(device), cp, params)

    def warp_coordinates(self, coords: Tensor) -> Tensor:
        """Apply T to points: ``coords`` [B or 1, N, 2] (x, y) -> [B, N, 2]."""
        theta = self.theta.to(coords.dtype).unsqueeze(1)  # [B, 1, 2, 3]
        out = (theta[..., :2] @ coords.unsqueeze(-1)).squeeze(-1) + theta[..., 2]  # [B, N, 2]
        if self.control_points is not None:
            cp = self.control_points.to(coords.dtype)  # [P, 2]
            dist = (coords.unsqueeze(2) - cp.view(1, 1, -1, 2)).abs().sum(-1)  # [B|1, N, P] L1 distance
            radial = dist**2 * torch.log(dist + 1e-6)
            tps = (radial * self.control_params.to(coords.dtype)).sum(dim=2, keepdim=True)  # [B, N, 1]
            out = out + tps  # the same scalar displacement on x and y (official form)
        return out

    def transform_frame(self, frame: Tensor) -> Tensor:
        """Resample ``frame`` [B, C, H, W] at T(identity grid) (reflection padding, align_corners=False)."""
        b, _, h, w = frame.shape
        if b != self.batch:
            raise ValueError(f"frame batch {b} != transform batch {self.batch}.")
        grid = make_coordinate_grid(h, w, device=frame.device, dtype=frame.dtype).view(1, h * w, 2)
        grid = self.warp_coordinates(grid).view(b, h, w, 2)
        return F.grid_sample(frame, grid, padding_mode="reflection", align_corners=False)

    def jacobian(self, coords: Tensor, *, create_graph: bool = True) -> Tensor:
        """dT/dz at ``coords`` [B, N, 2] -> [B, N, 2, 2] (row = output x, y), by autograd.

        With ``create_graph`` (training) the result stays differentiable w.r.t. ``coords``; when
        ``coords`` does not require grad, a detached copy is differentiated and no graph is kept.
        """
        with torch.enable_grad():
            if not coords.requires_grad:
                create_graph = False  # nothing upstream to differentiate into
                coords = coords.detach().requires_grad_(True)
            warped = self.warp_coordinates(coords)
            # T acts pointwise, so the gradient of the sum over points is the per-point derivative.
            grad_x = torch.autograd.grad(warped[..., 0].sum(), coords, retain_graph=True,
                                         create_graph=create_graph)[0]
            grad_y = torch.autograd.grad(warped[..., 1].sum(), coords, create_graph=create_graph)[0]
        return torch.stack([grad_x, grad_y], dim=-2)  # [B, N, 2, 2]


def equivariance_jacobian_residual(jacobian_driving: Tensor, kp_transformed: Keypoints,
                                   transform: RandomTPSTransform, *, create_graph: bool = True) -> Tensor:
    """Unweighted, unreduced ``|I - inv(J_d) @ (dT/dz(kp_t) @ J_t)|`` -> [B, K, 2, 2].

    Args:
        jacobian_driving: [B, K, 2, 2] jacobians of the driving frame.
        kp_transformed: keypoints detected on the transformed frame (jacobian required).
        transform: the transform that produced that frame.
    """
    if kp_transformed.jacobian is None:
        raise ValueError("kp_transformed has no jacobian; the jacobian equivariance term needs one.")
    dT = transform.jacobian(kp_transformed.value, create_graph=create_graph)  # [B, K, 2, 2]
    composed = torch.inverse(jacobian_driving) @ (dT @ kp_transformed.jacobian)  # [B, K, 2, 2]
    eye = torch.eye(2, dtype=composed.dtype, device=composed.device).view(1, 1, 2, 2)
    return (eye - composed).abs()


def equivariance_losses(kp_driving: Keypoints, kp_transformed: Keypoints, transform: RandomTPSTransform,
                        weight_value: float, weight_jacobian: float) -> dict[str, Tensor]:
    """Weighted equivariance losses (both keys always present; a skipped term is a zero scalar).

    Args:
        kp_driving: keypoints of the driving frame, value [B, K, 2], jacobian [B, K, 2, 2] or None.
        kp_transformed: keypoints of ``transform.transform_frame(driving)``.
        transform: the random transform.
        weight_value: weight of the value term (official 10).
        weight_jacobian: weight of the jacobian term (official 10); the term is skipped (0) when
            this is 0 or either keypoint set has no jacobians (e.g. the TPS prior).

    Returns:
        ``{'equivariance_value': (), 'equivariance_jacobian': ()}``.
    """
    zero = kp_driving.value.new_zeros(())
    value = zero
    if weight_value != 0:
        warped = transform.warp_coordinates(kp_transformed.value)  # [B, K, 2]
        value = weight_value * (kp_driving.value - warped).abs().mean()
    jac = zero
    if weight_jacobian != 0 and kp_driving.jacobian is not None and kp_transformed.jacobian is not None:
        residual = equivariance_jacobian_residual(kp_driving.jacobian, kp_transformed, transform)
        jac = weight_jacobian * residual.mean()
    return {"equivariance_value": value, "equivariance_jacobian": jac}
