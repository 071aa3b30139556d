// Causal attention as autograd nodes: on CUDA with bf16/fp16, SDPA's own fused kernel for plain rows
// and the varlen flash kernel for packed ones; SDPA with recompute everywhere else. Shapes as in attention.h; N = B·T tokens in all.
#include "trainer/engine/model/attention.h"

#include <ATen/ops/_flash_attention_backward.h>
#include <ATen/ops/_flash_attention_forward.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <atomic>
#include <iostream>
#include <limits>
#include <optional>
#include <tuple>

#ifdef HERD_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace herd::engine {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The varlen flash kernel over the flattened tokens: q [N, Nq, D], k, v [N, Nkv, D], documents cut at
// cu_seqlens, causal within each. Flash reads grouped K/V natively and sums their gradients over
// the group itself. Saved: q, k, v, out, logsumexp [Nq, N] float32 and the rng state tensors (dropout
// is 0, so they are never read; the backward's signature wants them), all through
// save_for_backward — `out` is this node's output, and only SavedVariable breaks that cycle.
class FlashVarlen : public torch::autograd::Function<FlashVarlen> {
 public:
  static constexpr int64_t kWindowLeft = -1;  // unlimited
  static constexpr int64_t kWindowRight = 0;  // causal

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& cu_seqlens, int64_t max_seqlen, double scale) {
    // (output, softmax_logsumexp, rng_state, unused, debug_attn_mask). Causal is the window
    // (left -1, right 0), passed explicitly as torch.nn.attention.varlen does, so one kernel path
    // serves every batch (with no window, a batch of only one-token documents would take the
    // kernel's decode-time GQA swap). q and k documents have equal lengths, so the alignment of the
    // causal diagonal does not matter. logsumexp is [Nq, N] float32.
    auto [out, lse, rng_state, unused, debug_mask] = at::_flash_attention_forward(
        q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, /*dropout_p=*/0.0, /*is_causal=*/true,
        /*return_debug_mask=*/false, std::optional<double>(scale), kWindowLeft, kWindowRight);
    (void)debug_mask;
    ctx->save_for_backward({q, k, v, out, lse, cu_seqlens, rng_state, unused});
    ctx->saved_data["max_seqlen"] = max_seqlen;
    ctx->saved_data["scale"] = scale;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list s = ctx->get_saved_variables();
    const at::Tensor &q = s[0], &k = s[1], &v = s[2], &out = s[3], &lse = s[4], &cu = s[5];
    const int64_t max_seqlen = ctx->saved_data["max_seqlen"].toInt();
    const double scale = ctx->saved_data["scale"].toDouble();
    variable_list grads(6);
    if (!grad_outputs[0].defined()) return grads;
    // The kernel wants dout contiguous and in q's dtype (an upstream op may hand back float32 or a
    // transposed gradient).
    at::Tensor dout = grad_outputs[0].to(q.scalar_type()).contiguous();
    auto [dq, dk, dv] = at::_flash_attention_backward(dout, q, k, v, out, lse, cu, cu, max_seqlen, max_seqlen,
                                                      /*dropout_p=*/0.0, /*is_causal=*/true, s[6], s[7],
                                                      std::optional<double>(scale), kWindowLeft, kWindowRight);
    grads[0] = dq;
    grads[1] = dk;
    grads[2] = dv;
    return grads;
  }
};

// [B, T, Nq, D] attention through scaled_dot_product_attention in the [B, heads, T, D] layout it
// takes. Plain rows: is_causal, GQA through enable_gqa. Packed rows: the mask, with K/V expanded to
// Nq heads (the masked kernels want equal head counts; autograd sums the expansion back).
at::Tensor SdpaAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                         double scale) {
  const int64_t Nq = q.size(2), Nkv = k.size(2);
  at::Tensor qt = q.transpose(1, 2);  // [B, Nq, T, D]
  at::Tensor kt = k.transpose(1, 2);  // [B, Nkv, T, D]
  at::Tensor vt = v.transpose(1, 2);
  at::Tensor o;
  if (mask.defined()) {
    if (Nkv != Nq) {
      kt = kt.repeat_interleave(Nq / Nkv, 1);  // [B, Nq, T, D]
      vt = vt.repeat_interleave(Nq / Nkv, 1);
    }
    o = at::scaled_dot_product_attention(qt, kt, vt, mask, 0.0, /*is_causal=*/false, scale);
  } else {
    o = at::scaled_dot_product_attention(qt, kt, vt, std::nullopt, 0.0, /*is_causal=*/true, scale,
                                         /*enable_gqa=*/Nkv != Nq);
  }
  return o.transpose(1, 2).contiguous();  // [B, T, Nq, D]
}

// SDPA under no-grad; the backward reruns it with grad on and back-propagates through that, so
// only q, k, v (and the shared mask) are kept, never the [B, Nq, T, D] expansions or any
// kernel-side state.
class SdpaRecompute : public torch::autograd::Function<SdpaRecompute> {
 public:
  // mask: optional, because a custom function's inputs may not be undefined tensors.
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& mask, double scale) {
    const at::Tensor m = mask.value_or(at::Tensor());
    ctx->save_for_backward({q, k, v, m});
    ctx->saved_data["scale"] = scale;
    return SdpaAttention(q, k, v, m, scale);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list s = ctx->get_saved_variables();
    const double scale = ctx->saved_data["scale"].toDouble();
    variable_list grads(5);
    if (!grad_outputs[0].defined()) return grads;
    variable_list inputs;
    std::vector<size_t> slot;  // where each input's gradient goes in `grads`
    variable_list leaves(3);
    for (size_t i = 0; i < 3; ++i) {
      const bool want = ctx->needs_input_grad(i);
      leaves[i] = s[i].detach().requires_grad_(want);
      if (want) {
        inputs.push_back(leaves[i]);
        slot.push_back(i);
      }
    }
    if (inputs.empty()) return grads;
    at::Tensor out;
    {
      at::AutoGradMode grad_on(true);
      out = SdpaAttention(leaves[0], leaves[1], leaves[2], s[3], scale);
    }
    variable_list g = torch::autograd::grad({out}, inputs, {grad_outputs[0].to(out.scalar_type())},
                                            /*retain_graph=*/false, /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t i = 0; i < g.size(); ++i) grads[slot[i]] = g[i];
    return grads;
  }
};

// Set once the flash kernel refused a call (kAuto): from then on every call takes SDPA, and says so
// once. A library mismatch must cost speed, not the run.
std::atomic<bool> g_flash_refused{false};
std::atomic<AttentionBackend> g_backend_override{AttentionBackend::kAuto};

// The [B, 1, T, T] block-diagonal causal mask of a layout built without one, from its cu_seqlens:
// token p of the flattened batch belongs to the last document starting at or before p.
at::Tensor MaskFromCuSeqlens(const AttentionLayout& layout) {
  const int64_t B = layout.batch, T = layout.tokens;
  at::Tensor positions = at::arange(B * T, layout.cu_seqlens.options().dtype(at::kLong));
  at::Tensor doc = at::searchsorted(layout.cu_seqlens.to(at::kLong), positions, /*out_int32=*/false, /*right=*/true)
                       .view({B, T});  // [B, T]
  at::Tensor causal = at::ones({T, T}, positions.options().dtype(at::kBool)).tril();
  return (doc.unsqueeze(2) == doc.unsqueeze(1)).logical_and(causal).unsqueeze(1);
}

}  // namespace

void SetAttentionBackendOverride(AttentionBackend backend) { g_backend_override.store(backend); }

bool FlashAttentionApplies(at::Device device, at::ScalarType dtype, int64_t head_dim) {
  if (!device.is_cuda() || g_flash_refused.load(std::memory_order_relaxed)) return false;
  if (g_backend_override.load(std::memory_order_relaxed) == AttentionBackend::kSdpa) return false;
  if (dtype != at::kBFloat16 && dtype != at::kHalf) return false;
  if (head_dim <= 0 || head_dim > 256 || head_dim % 8 != 0) return false;
#ifdef HERD_WITH_CUDA
  // PyTorch's flash kernels are built for sm80 and newer only.
  int major = 0;
  const int index = device.has_index() ? device.index() : 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, index) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it, so the next CUDA call does not report it
    return false;
  }
  return major >= 8;
#else
  return false;
#endif
}

AttentionLayout MakeAttentionLayout(const at::Tensor& doc_ids, int64_t batch, int64_t tokens, at::Device device,
                                    bool with_mask) {
  TORCH_CHECK(batch > 0 && tokens > 0, "MakeAttentionLayout: empty batch [", batch, ", ", tokens, "]");
  TORCH_CHECK(batch * tokens <= std::numeric_limits<int32_t>::max(),
              "MakeAttentionLayout: B·T must fit int32 (the kernel's cu_seqlens), got ", batch * tokens);
  AttentionLayout l;
  l.batch = batch;
  l.tokens = tokens;
  const auto int_opts = at::TensorOptions().dtype(at::kInt).device(device);
  if (!doc_ids.defined()) {
    l.cu_seqlens = at::arange(0, batch * tokens + 1, tokens, int_opts);  // [B + 1]
    l.max_seqlen = tokens;
    return l;
  }
  TORCH_CHECK(doc_ids.dim() == 2 && doc_ids.size(0) == batch && doc_ids.size(1) == tokens,
              "MakeAttentionLayout: doc_ids must be [", batch, ", ", tokens, "], got ", doc_ids.sizes());
  TORCH_CHECK(!at::isFloatingType(doc_ids.scalar_type()) && doc_ids.scalar_type() != at::kBool,
              "MakeAttentionLayout: doc_ids must be integer, got ", doc_ids.scalar_type());
  l.packed = true;
  // A document starts at each row's first token and wherever the id changes within a row.
  at::Tensor ids = doc_ids.to(at::kCPU, at::kLong);  // [B, T]
  at::Tensor starts = at::ones({batch, tokens}, at::TensorOptions().dtype(at::kBool));
  if (tokens > 1) starts.narrow(1, 1, tokens - 1).copy_(ids.narrow(1, 1, tokens - 1) != ids.narrow(1, 0, tokens - 1));
  at::Tensor begin = starts.flatten().nonzero().flatten();                           // [docs] int64, ascending
  at::Tensor cu = at::cat({begin, at::full({1}, batch * tokens, begin.options())});  // [docs + 1]
  l.max_seqlen = (cu.narrow(0, 1, cu.size(0) - 1) - cu.narrow(0, 0, cu.size(0) - 1)).max().item<int64_t>();
  l.cu_seqlens = cu.to(at::kInt).to(device);
  if (with_mask) {
    // Run index per token (unique over the batch), so the mask cuts exactly where cu_seqlens does.
    at::Tensor run = starts.flatten().cumsum(0).view({batch, tokens}).to(device);  // [B, T]
    at::Tensor same = run.unsqueeze(2) == run.unsqueeze(1);                        // [B, T, T]
    at::Tensor causal = at::ones({tokens, tokens}, at::TensorOptions().dtype(at::kBool).device(device)).tril();
    l.mask = same.logical_and(causal).unsqueeze(1);  // [B, 1, T, T]
  }
  return l;
}

at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionLayout& layout,
                           double scale, AttentionBackend backend) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "CausalAttention: q, k, v must be [B, T, N, D]");
  const int64_t B = q.size(0), T = q.size(1), Nq = q.size(2), D = q.size(3), Nkv = k.size(2);
  TORCH_CHECK(B == layout.batch && T == layout.tokens, "CausalAttention: q is ", q.sizes(), " but the layout is for [",
              layout.batch, ", ", layout.tokens, "]");
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == B && k.size(1) == T && k.size(3) == D, "CausalAttention: k ",
              k.sizes(), " and v ", v.sizes(), " do not match q ", q.sizes());
  TORCH_CHECK(Nkv > 0 && Nq % Nkv == 0, "CausalAttention: ", Nq, " query heads not a multiple of ", Nkv, " KV heads");
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type() && k.device() == q.device() &&
                  v.device() == q.device(),
              "CausalAttention: q, k, v must share dtype and device");
  const bool flash_applies =
      backend != AttentionBackend::kSdpa && FlashAttentionApplies(q.device(), q.scalar_type(), D);
  TORCH_CHECK(backend != AttentionBackend::kFlash || flash_applies, "CausalAttention: the flash kernel does not take ",
              q.scalar_type(), " on ", q.device(), " with D ", D);
  // Plain rows (one document each) on the flash-capable path: scaled_dot_product_attention with its
  // own autograd, which picks PyTorch's fastest fused causal kernel for the card and keeps only its
  // output and logsumexp beside q, k, v. On an H100 that beat the varlen kernel over the same rows
  // (docs/gpu_notes.md); packed rows need the varlen kernel's document cuts.
  const AttentionBackend forced = g_backend_override.load(std::memory_order_relaxed);
  if (flash_applies && !layout.packed && backend == AttentionBackend::kAuto && forced != AttentionBackend::kFlash) {
    return SdpaAttention(q, k, v, at::Tensor(), scale);
  }
  if (flash_applies) {
    TORCH_CHECK(layout.cu_seqlens.defined() && layout.cu_seqlens.device() == q.device(),
                "CausalAttention: the layout's cu_seqlens must be on ", q.device());
    try {
      at::Tensor out = FlashVarlen::apply(q.contiguous().view({B * T, Nq, D}), k.contiguous().view({B * T, Nkv, D}),
                                          v.contiguous().view({B * T, Nkv, D}), layout.cu_seqlens, layout.max_seqlen,
                                          scale);  // [N, Nq, D]
      return out.view({B, T, Nq, D});
    } catch (const c10::Error& e) {
      if (backend == AttentionBackend::kFlash || g_flash_refused.exchange(true)) throw;
      std::cerr << "herd: the varlen flash attention kernel refused a call (" << e.what_without_backtrace()
                << "); attention takes scaled_dot_product_attention from now on, more slowly" << std::endl;
    }
  }
  if (!layout.packed) return SdpaRecompute::apply(q, k, v, std::nullopt, scale);
  TORCH_CHECK(layout.mask.defined() || layout.cu_seqlens.defined(),
              "CausalAttention: packed rows off the flash path need the layout built with_mask");
  return SdpaRecompute::apply(q, k, v, layout.mask.defined() ? layout.mask : MaskFromCuSeqlens(layout), scale);
}

}  // namespace herd::engine
