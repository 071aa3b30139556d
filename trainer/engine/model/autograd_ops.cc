// Chunked head + cross-entropy and activation checkpointing as autograd nodes. Shapes: N trained
// tokens, H hidden, V vocab, m tokens in one chunk.
#include "trainer/engine/model/autograd_ops.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include "trainer/engine/kernels/cross_entropy.h"

namespace herd::engine {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The loss is a sum, so its gradient is g · dΣ/drows for the scalar g that arrives in backward:
// the forward computes dΣ/drows chunk by chunk while that chunk's logits exist (softmax − one-hot,
// · head, the matmul autograd's backward would do) and keeps only that [N, H] float32 result;
// the backward scales it. No chunk's logits are ever computed twice, and none outlives its chunk.
class ChunkedCe : public torch::autograd::Function<ChunkedCe> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& rows, const at::Tensor& head,
                               const at::Tensor& targets, int64_t chunk_tokens, at::ScalarType acc, bool want_grad) {
    TORCH_CHECK(!head.requires_grad(), "ChunkedCrossEntropy: the output head must be frozen");
    TORCH_CHECK(rows.dim() == 2 && targets.dim() == 1 && rows.size(0) == targets.size(0),
                "ChunkedCrossEntropy: rows [N, H] and targets [N] expected, got ", rows.sizes(), " and ",
                targets.sizes());
    TORCH_CHECK(chunk_tokens > 0, "ChunkedCrossEntropy: chunk_tokens must be positive");
    const int64_t n = rows.size(0);
    at::Tensor loss = at::zeros({}, rows.options().dtype(acc));
    at::Tensor correct = at::zeros({}, rows.options().dtype(at::kLong));
    at::Tensor grad_sum;  // dΣ/drows [N, H] in acc
    if (want_grad) grad_sum = at::empty(rows.sizes(), rows.options().dtype(acc));
    for (int64_t start = 0; start < n; start += chunk_tokens) {
      const int64_t m = std::min(chunk_tokens, n - start);
      // [m, V] in rows' dtype (bf16 on the GPU); float64 models compute in float64.
      at::Tensor logits = at::linear(rows.narrow(0, start, m), head);
      if (acc == at::kDouble) logits = logits.to(acc);
      // One fused pass (kernels/cross_entropy.h) in float32: lse − logit[target], argmax hits and,
      // for training, softmax − onehot written over the logits in their dtype.
      CrossEntropyChunkResult ce = CrossEntropyChunk(logits, targets.narrow(0, start, m), want_grad);
      loss += ce.loss.sum().to(acc);
      correct += ce.hit.sum();
      if (!want_grad) continue;
      grad_sum.narrow(0, start, m).copy_(at::mm(logits.to(rows.scalar_type()), head));  // [m, H]
    }
    ctx->save_for_backward({grad_sum});
    ctx->saved_data["rows_dtype"] = static_cast<int64_t>(rows.scalar_type());
    ctx->mark_non_differentiable({correct});
    return {loss, correct};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor grad_sum = ctx->get_saved_variables()[0];  // [N, H]
    const auto rows_dtype = static_cast<at::ScalarType>(ctx->saved_data["rows_dtype"].toInt());
    const at::Tensor& g = grad_outputs[0];  // scalar
    at::Tensor grad_rows;
    if (g.defined() && grad_sum.defined()) grad_rows = (grad_sum * g.to(grad_sum.scalar_type())).to(rows_dtype);
    return {grad_rows, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// The backward of Checkpointed: next edges are [x, params...].
struct RecomputeNode : torch::autograd::Node {
  std::function<at::Tensor(const at::Tensor&)> fn;
  at::Tensor x;  // detached: the values only, not the graph behind them
  uint32_t x_version = 0;
  std::vector<at::Tensor> params;

  variable_list apply(variable_list&& grads) override {
    TORCH_CHECK(x.defined(), "Checkpointed: backward ran twice through a recomputed layer (retain_graph)");
    TORCH_CHECK(x._version() == x_version, "Checkpointed: the layer input was modified in place after the forward");
    variable_list out(1 + params.size());
    if (!grads[0].defined()) return out;
    const bool want_x = task_should_compute_output(0);
    at::Tensor xd = x.detach().requires_grad_(want_x);
    at::Tensor y;
    {
      at::AutoGradMode grad_on(true);
      y = fn(xd);
    }
    variable_list inputs;
    std::vector<size_t> slot;  // where each input's gradient goes in `out`
    if (want_x) {
      inputs.push_back(xd);
      slot.push_back(0);
    }
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].requires_grad() && task_should_compute_output(1 + i)) {
        inputs.push_back(params[i]);
        slot.push_back(1 + i);
      }
    }
    if (!inputs.empty() && y.requires_grad()) {
      variable_list g = torch::autograd::grad({y}, inputs, {grads[0]}, /*retain_graph=*/false,
                                              /*create_graph=*/false, /*allow_unused=*/true);
      for (size_t i = 0; i < g.size(); ++i) out[slot[i]] = g[i];
    }
    return out;
  }
  void release_variables() override { x.reset(); }
};

}  // namespace

ChunkedCrossEntropyResult ChunkedCrossEntropy(const at::Tensor& rows, const at::Tensor& head,
                                              const at::Tensor& targets, int64_t chunk_tokens, at::ScalarType acc) {
  const bool want_grad = at::GradMode::is_enabled() && rows.requires_grad();
  variable_list out = ChunkedCe::apply(rows, head, targets, chunk_tokens, acc, want_grad);
  return {out[0], out[1]};
}

at::Tensor Checkpointed(std::function<at::Tensor(const at::Tensor&)> fn, const at::Tensor& x,
                        const std::vector<at::Tensor>& params) {
  bool needs_grad = x.requires_grad();
  for (const at::Tensor& p : params) needs_grad = needs_grad || p.requires_grad();
  if (!at::GradMode::is_enabled() || !needs_grad) return fn(x);
  at::Tensor y;
  {
    at::NoGradGuard no_grad;
    y = fn(x);
  }
  TORCH_CHECK(!y.is_view() && !y.requires_grad(), "Checkpointed: fn must return a new tensor");
  auto node = std::shared_ptr<RecomputeNode>(new RecomputeNode(), torch::autograd::deleteNode);
  node->fn = std::move(fn);
  node->x = x.detach();
  node->x_version = x._version();
  node->params = params;
  torch::autograd::edge_list edges;
  edges.reserve(1 + params.size());
  edges.push_back(x.requires_grad() ? torch::autograd::impl::gradient_edge(x) : torch::autograd::Edge());
  for (const at::Tensor& p : params) {
    edges.push_back(p.requires_grad() ? torch::autograd::impl::gradient_edge(p) : torch::autograd::Edge());
  }
  node->set_next_edges(std::move(edges));
  torch::autograd::create_gradient_edge(y, std::move(node));
  return y;
}

}  // namespace herd::engine
