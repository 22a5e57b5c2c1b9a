// Python bindings of the fused correlation lookup (built by mrfa/ops/corr_lookup/build.py with
// torch.utils.cpp_extension.load, or ahead of time): input checks, contiguity, then the CUDA launchers.
#include <torch/extension.h>

#include <vector>

at::Tensor corr_lookup_forward_cuda(const std::vector<at::Tensor>& levels, const at::Tensor& coords, int64_t radius);
std::vector<at::Tensor> corr_lookup_backward_cuda(const at::Tensor& grad_out, const std::vector<at::Tensor>& levels,
                                                  const at::Tensor& coords, int64_t radius);

namespace {

constexpr int64_t kMaxLevels = 4;  // = mrfa_corr::kMaxLevels
#if defined(MRFA_CUDA_EMULATION)
constexpr bool kEmulated = true;  // CPU tensors stand in for CUDA ones (tests/cuda_emulation/)
#else
constexpr bool kEmulated = false;
#endif

at::ScalarType acc_type(at::ScalarType level) {
  return level == at::kDouble ? at::kDouble : at::kFloat;
}

std::vector<at::Tensor> checked_levels(const std::vector<at::Tensor>& levels, const at::Tensor& coords,
                                       int64_t radius) {
  TORCH_CHECK(!levels.empty() && static_cast<int64_t>(levels.size()) <= kMaxLevels,
              "mrfa corr_lookup: expected 1 to ", kMaxLevels, " pyramid levels, got ", levels.size());
  TORCH_CHECK(radius >= 0 && radius <= 4, "mrfa corr_lookup: radius must be in 0..4, got ", radius);
  const at::Tensor& first = levels[0];
  TORCH_CHECK(kEmulated || first.is_cuda(), "mrfa corr_lookup: pyramid levels must be CUDA tensors, got ", first.device());
  const auto dtype = first.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "mrfa corr_lookup: level dtype must be float32/float64/float16/bfloat16, got ", dtype);
  std::vector<at::Tensor> out;
  for (size_t l = 0; l < levels.size(); ++l) {
    const at::Tensor& lv = levels[l];
    TORCH_CHECK(lv.dim() == 4 && lv.size(0) == first.size(0) && lv.size(1) == first.size(1),
                "mrfa corr_lookup: level ", l, " must be [B, Q, H, W] with the B, Q of level 0, got ", lv.sizes());
    TORCH_CHECK(lv.size(2) > 0 && lv.size(3) > 0, "mrfa corr_lookup: level ", l, " has an empty map ", lv.sizes());
    TORCH_CHECK(lv.scalar_type() == dtype, "mrfa corr_lookup: level ", l, " has dtype ", lv.scalar_type(),
                " but level 0 has ", dtype);
    TORCH_CHECK(lv.device() == first.device(), "mrfa corr_lookup: level ", l, " is on ", lv.device(),
                " but level 0 is on ", first.device());
    out.push_back(lv.contiguous());
  }
  TORCH_CHECK(coords.device() == first.device(), "mrfa corr_lookup: coords on ", coords.device(),
              " but the pyramid on ", first.device());
  TORCH_CHECK(coords.dim() == 4 && coords.size(0) == first.size(0) && coords.size(1) == 2 &&
                  coords.size(2) * coords.size(3) == first.size(1),
              "mrfa corr_lookup: coords must be [B, 2, h, w] with h*w = Q = ", first.size(1), ", got ",
              coords.sizes());
  TORCH_CHECK(coords.scalar_type() == acc_type(dtype), "mrfa corr_lookup: coords must be ", acc_type(dtype),
              " for ", dtype, " levels, got ", coords.scalar_type());
  return out;
}

at::Tensor forward(const std::vector<at::Tensor>& levels, const at::Tensor& coords, int64_t radius) {
  const std::vector<at::Tensor> lv = checked_levels(levels, coords, radius);
  return corr_lookup_forward_cuda(lv, coords.contiguous(), radius);
}

std::vector<at::Tensor> backward(const at::Tensor& grad_out, const std::vector<at::Tensor>& levels,
                                 const at::Tensor& coords, int64_t radius) {
  const std::vector<at::Tensor> lv = checked_levels(levels, coords, radius);
  const int64_t channels = static_cast<int64_t>(lv.size()) * (2 * radius + 1) * (2 * radius + 1);
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == coords.size(0) && grad_out.size(1) == channels &&
                  grad_out.size(2) == coords.size(2) && grad_out.size(3) == coords.size(3),
              "mrfa corr_lookup: grad_out must be [B, ", channels, ", h, w], got ", grad_out.sizes());
  TORCH_CHECK(grad_out.device() == coords.device(), "mrfa corr_lookup: grad_out on ", grad_out.device(),
              " but coords on ", coords.device());
  return corr_lookup_backward_cuda(grad_out.to(coords.scalar_type()).contiguous(), lv, coords.contiguous(), radius);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused correlation lookup (levels [B,Q,H_l,W_l], coords [B,2,h,w], radius)");
  m.def("backward", &backward, "its gradients: [grad level 0, ..., grad level L-1, grad coords]");
}
