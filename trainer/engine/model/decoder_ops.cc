// The decoder layer's autograd nodes. Shapes: B batch, T tokens, N = B·T, H hidden, Nq/Nkv heads,
// D head dim, I intermediate, r LoRA rank, s LoRA scale. "ct" is the compute dtype (the frozen
// weights'), "lt" the LoRA parameters' dtype.
#include "trainer/engine/model/decoder_ops.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <atomic>
#include <initializer_list>
#include <vector>

#include "trainer/engine/kernels/fused_ops.h"
#include "trainer/engine/model/lora_dropout.h"

namespace herd::engine {
namespace {

using torch::autograd::variable_list;

std::atomic<bool> g_mm_out_dtype{true};

// a · b in `acc`. On CUDA with bf16/fp16 operands the matmul accumulates and writes float32
// itself (mm's out_dtype); should that overload be refused, the product is cast instead (once
// refused, always). Elsewhere the operands are cast first, which is exact.
at::Tensor MmTo(const at::Tensor& a, const at::Tensor& b, at::ScalarType acc) {
  if (a.scalar_type() == acc) return at::mm(a, b);
  const bool low = a.scalar_type() == at::kBFloat16 || a.scalar_type() == at::kHalf;
  if (a.is_cuda() && low && acc == at::kFloat && g_mm_out_dtype.load(std::memory_order_relaxed)) {
    try {
      return at::mm(a, b, acc);
    } catch (const c10::Error&) {
      g_mm_out_dtype.store(false);
    }
  }
  if (!a.is_cuda()) return at::mm(a.to(acc), b.to(acc));
  return at::mm(a, b).to(acc);
}

// Everything one projection needs, resolved from the layer's weights.
struct ProjCtx {
  int k = 0;
  at::Tensor w;       // [out, in] frozen
  at::Tensor a, b;    // LoRA leaves, or undefined
  at::Tensor a_c;     // A in the weights' dtype, and s·B: cast once per forward and shared with the
  at::Tensor sb_c;    // backward (the leaves are float32; the matmuls run in the weights' dtype)
  double scale = 1;
  at::Tensor keys;    // [B, 2] dropout row keys, or undefined
  double keep = 1;

  bool adapted() const { return a.defined(); }
};

ProjCtx MakeProj(const DecoderWeights& w, const DecoderShape& s, const DecoderInputs& in, Proj p) {
  ProjCtx c;
  c.k = static_cast<int>(p);
  c.w = w.w[c.k];
  c.a = w.lora_a[c.k];
  c.b = w.lora_b[c.k];
  c.scale = s.lora_scale;
  if (c.adapted()) {
    const at::ScalarType ct = c.w.scalar_type();
    c.a_c = c.a.detach().to(ct);
    // One kernel: float32 B times s, rounded once into the weights' dtype.
    c.sb_c = at::empty(c.b.sizes(), c.b.options().dtype(ct));
    at::mul_out(c.sb_c, c.b.detach(), at::scalar_tensor(c.scale, at::kDouble));
  }
  if (c.adapted() && in.dropout_keys.defined()) {
    c.keys = in.dropout_keys.select(0, c.k);
    c.keep = in.keep;
  }
  return c;
}

// The adapter's input: x, or x · mask / keep under LoRA dropout. The mask is a hash of the row keys
// (model/lora_dropout.h), so backward makes the same one again instead of keeping it.
at::Tensor AdapterInput(const ProjCtx& p, const at::Tensor& x2d, int64_t B, int64_t T) {
  if (!p.keys.defined()) return x2d;
  at::Tensor mask = DropoutKeepMask(p.keys, T, x2d.size(1), p.keep).view({B * T, x2d.size(1)});  // [N, in] bool
  return (x2d * mask).mul_(1.0 / p.keep);
}

// y = x Wᵀ + s · (x' Aᵀ) Bᵀ, x' the adapter's input. *xa = x' Aᵀ [N, r] (kept for B's gradient).
at::Tensor ProjectForward(const ProjCtx& p, const at::Tensor& x2d, int64_t B, int64_t T, at::Tensor* xa) {
  at::Tensor y = at::mm(x2d, p.w.t());  // [N, out]
  if (!p.adapted()) return y;
  const at::ScalarType ct = x2d.scalar_type();
  TORCH_CHECK(p.a_c.scalar_type() == ct, "ProjectForward: input ", ct, " but weights ", p.a_c.scalar_type());
  *xa = at::mm(AdapterInput(p, x2d, B, T), p.a_c.t());  // [N, r]
  y.addmm_(*xa, p.sb_c.t());
  return y;
}

// dy [N, out] → adds dL/dx to *dx (when dx is not null; allocated on first use) and sets the
// adapter's dL/dA, dL/dB in the LoRA dtype (when asked). x2d is the projection's input; it is only
// read for A's gradient.
void ProjectBackward(const ProjCtx& p, const at::Tensor& dy, const at::Tensor& x2d, const at::Tensor& xa, int64_t B,
                     int64_t T, at::Tensor* dx, bool want_a, bool want_b, at::Tensor* da, at::Tensor* db) {
  if (dx != nullptr) {
    if (dx->defined()) {
      dx->addmm_(dy, p.w);
    } else {
      *dx = at::mm(dy, p.w);  // [N, in]
    }
  }
  if (!p.adapted()) return;
  const at::ScalarType lt = p.a.scalar_type();
  if (want_b) *db = MmTo(dy.t(), xa, lt).mul_(p.scale);  // [out, r]
  if (!want_a && dx == nullptr) return;
  at::Tensor u = at::mm(dy, p.sb_c);  // [N, r] = s · dy B
  if (want_a) *da = MmTo(u.t(), AdapterInput(p, x2d, B, T), lt);  // [r, in]
  if (dx == nullptr) return;
  if (!p.keys.defined()) {
    dx->addmm_(u, p.a_c);
  } else {
    const int64_t in = p.a.size(1);
    at::Tensor mask = DropoutKeepMask(p.keys, T, in, p.keep).view({B * T, in});
    dx->add_(at::mm(u, p.a_c).mul_(mask).mul_(1.0 / p.keep));
  }
}

// A node whose next edges are [x, then A and B of each adapted projection it owns].
class LayerNode : public torch::autograd::Node {
 public:
  // Returns false when nothing needs a gradient (then the caller attaches nothing).
  bool Connect(const at::Tensor& x, std::initializer_list<const ProjCtx*> projs) {
    torch::autograd::edge_list edges;
    bool any = false;
    auto add = [&](const at::Tensor& t) {
      const bool g = t.defined() && t.requires_grad();
      any = any || g;
      edges.push_back(g ? torch::autograd::impl::gradient_edge(t) : torch::autograd::Edge());
    };
    add(x);
    for (const ProjCtx* p : projs) {
      if (!p->adapted()) continue;
      slot_[p->k] = static_cast<int>(edges.size());
      add(p->a);
      add(p->b);
    }
    set_next_edges(std::move(edges));
    return any;
  }

 protected:
  bool WantX() { return task_should_compute_output(0); }
  bool WantA(const ProjCtx& p) { return p.adapted() && task_should_compute_output(slot_[p.k]); }
  bool WantB(const ProjCtx& p) { return p.adapted() && task_should_compute_output(slot_[p.k] + 1); }
  void Put(variable_list& out, const ProjCtx& p, const at::Tensor& da, const at::Tensor& db) {
    if (!p.adapted()) return;
    out[slot_[p.k]] = da;
    out[slot_[p.k] + 1] = db;
  }
  // An output's incoming gradient, or zeros of its shape where autograd passed none.
  static at::Tensor OrZeros(const at::Tensor& g, at::IntArrayRef sizes, const at::TensorOptions& options) {
    return g.defined() ? g.contiguous() : at::zeros(sizes, options);
  }
  int slot_[kNumProj] = {};
};

// Attaches `node` as the grad_fn of each output, in order (outputs are fresh, non-view tensors).
void Attach(const std::shared_ptr<torch::autograd::Node>& node, std::initializer_list<at::Tensor*> outputs) {
  for (at::Tensor* t : outputs) torch::autograd::create_gradient_edge(*t, node);
}

bool NeedsGraph(const at::Tensor& x, const DecoderWeights& w, std::initializer_list<Proj> projs) {
  if (!at::GradMode::is_enabled()) return false;
  bool any = x.requires_grad();
  for (Proj p : projs) {
    const int k = static_cast<int>(p);
    any = any || (w.lora_a[k].defined() && (w.lora_a[k].requires_grad() || w.lora_b[k].requires_grad()));
  }
  return any;
}

// x → RMSNorm → q, k, v (+LoRA) → RoPE(q), RoPE(k). Keeps x, rstd and the three [N, r] xa.
class QkvNode : public LayerNode {
 public:
  std::string name() const override { return "herd::QkvNode"; }
  ProjCtx proj[3];
  at::Tensor x, norm_w, rstd, xa[3], cos, sin;
  double eps = 0;
  int64_t B = 0, T = 0, Nq = 0, Nkv = 0, D = 0;

  variable_list apply(variable_list&& grads) override {
    TORCH_CHECK(x.defined(), "QkvNode: backward ran twice (retain_graph is not supported)");
    const int64_t N = B * T;
    at::Tensor dy[3] = {RopeBackward(OrZeros(grads[0], {B, T, Nq, D}, x.options()), cos, sin),
                        RopeBackward(OrZeros(grads[1], {B, T, Nkv, D}, x.options()), cos, sin),
                        OrZeros(grads[2], {B, T, Nkv, D}, x.options())};
    const at::Tensor x2d = x.view({N, x.size(-1)});
    bool need_h = false;
    for (const ProjCtx& p : proj) need_h = need_h || WantA(p);
    at::Tensor h = need_h ? RmsNormForward(x2d, norm_w, eps).y : at::Tensor();
    const bool want_x = WantX();
    at::Tensor dh;
    variable_list out(num_outputs());
    for (int i = 0; i < 3; ++i) {
      at::Tensor da, db;
      ProjectBackward(proj[i], dy[i].view({N, -1}), h, xa[i], B, T, want_x ? &dh : nullptr, WantA(proj[i]),
                      WantB(proj[i]), &da, &db);
      Put(out, proj[i], da, db);
    }
    if (want_x) out[0] = RmsNormBackward(dh, x2d, norm_w, rstd).view(x.sizes());
    return out;
  }
  void release_variables() override {
    x.reset();
    rstd.reset();
    for (at::Tensor& t : xa) t.reset();
  }
};

// One projection (+LoRA) on x [B, T, ...in] → [B, T, out]. Keeps x (for A's gradient) and xa.
class LinearNode : public LayerNode {
 public:
  std::string name() const override { return "herd::LinearNode"; }
  ProjCtx proj;
  at::Tensor x, xa;
  int64_t B = 0, T = 0;

  variable_list apply(variable_list&& grads) override {
    TORCH_CHECK(x.defined() || !proj.adapted(), "LinearNode: backward ran twice (retain_graph is not supported)");
    const int64_t N = B * T;
    const int64_t out_features = proj.w.size(0);
    at::Tensor dy = OrZeros(grads[0], {N, out_features}, proj.w.options()).view({N, out_features});
    const bool want_x = WantX();
    at::Tensor dx, da, db;
    ProjectBackward(proj, dy, x.defined() ? x.view({N, -1}) : x, xa, B, T, want_x ? &dx : nullptr, WantA(proj),
                    WantB(proj), &da, &db);
    variable_list out(num_outputs());
    if (want_x) out[0] = dx.view(in_sizes);
    Put(out, proj, da, db);
    return out;
  }
  void release_variables() override {
    x.reset();
    xa.reset();
  }
  std::vector<int64_t> in_sizes;
};

// x' → RMSNorm → gate, up (+LoRA) → SwiGLU → down (+LoRA). Keeps x', rstd, g, u and the xa.
class MlpNode : public LayerNode {
 public:
  std::string name() const override { return "herd::MlpNode"; }
  ProjCtx gate, up, down;
  at::Tensor x, norm_w, rstd, g, u, act, xa_gate, xa_up, xa_down;  // act: SwiGLU(g, u) when kept
  double eps = 0;
  int64_t B = 0, T = 0;

  variable_list apply(variable_list&& grads) override {
    TORCH_CHECK(x.defined(), "MlpNode: backward ran twice (retain_graph is not supported)");
    const int64_t N = B * T, H = x.size(-1);
    at::Tensor dy = OrZeros(grads[0], x.sizes(), x.options()).view({N, H});
    variable_list out(num_outputs());
    // Down: its input a = SwiGLU(g, u) is read only for A's gradient; made again unless kept.
    at::Tensor a = WantA(down) ? (act.defined() ? act : SwiGluForward(g, u)) : at::Tensor();
    act.reset();
    at::Tensor da_act, da, db;
    ProjectBackward(down, dy, a, xa_down, B, T, &da_act, WantA(down), WantB(down), &da, &db);
    Put(out, down, da, db);
    a.reset();
    auto [dg, du] = SwiGluBackward(da_act, g, u);
    da_act.reset();
    const at::Tensor x2d = x.view({N, H});
    at::Tensor h = (WantA(gate) || WantA(up)) ? RmsNormForward(x2d, norm_w, eps).y : at::Tensor();
    const bool want_x = WantX();
    at::Tensor dh;
    ProjectBackward(gate, dg, h, xa_gate, B, T, want_x ? &dh : nullptr, WantA(gate), WantB(gate), &da, &db);
    Put(out, gate, da, db);
    ProjectBackward(up, du, h, xa_up, B, T, want_x ? &dh : nullptr, WantA(up), WantB(up), &da, &db);
    Put(out, up, da, db);
    if (want_x) out[0] = RmsNormBackward(dh, x2d, norm_w, rstd).view(x.sizes());
    return out;
  }
  void release_variables() override {
    x.reset();
    rstd.reset();
    g.reset();
    u.reset();
    act.reset();
    xa_gate.reset();
    xa_up.reset();
    xa_down.reset();
  }
};

// Final norm: keeps x and rstd.
class NormNode : public torch::autograd::Node {
 public:
  std::string name() const override { return "herd::NormNode"; }
  at::Tensor x, w, rstd;
  variable_list apply(variable_list&& grads) override {
    TORCH_CHECK(x.defined(), "NormNode: backward ran twice (retain_graph is not supported)");
    if (!grads[0].defined()) return {at::Tensor()};
    return {RmsNormBackward(grads[0].contiguous(), x, w, rstd)};
  }
  void release_variables() override {
    x.reset();
    rstd.reset();
  }
};

template <typename NodeT>
std::shared_ptr<NodeT> NewNode() {
  return std::shared_ptr<NodeT>(new NodeT(), torch::autograd::deleteNode);
}

}  // namespace

at::Tensor RmsNormNode(const at::Tensor& x_in, const at::Tensor& w, double eps) {
  const at::Tensor x = x_in.contiguous();
  if (!at::GradMode::is_enabled() || !x.requires_grad()) return RmsNormForward(x, w, eps).y;
  RmsNormResult r;
  {
    at::NoGradGuard no_grad;
    r = RmsNormForward(x, w, eps);
  }
  auto node = NewNode<NormNode>();
  node->x = x.detach();
  node->w = w;
  node->rstd = r.rstd;
  node->set_next_edges({torch::autograd::impl::gradient_edge(x)});
  Attach(node, {&r.y});
  return r.y;
}

at::Tensor LeanDecoderLayer(const at::Tensor& x_in, const DecoderWeights& w, const DecoderShape& s,
                            const DecoderInputs& in) {
  TORCH_CHECK(x_in.dim() == 3, "LeanDecoderLayer: x [B, T, H] expected, got ", x_in.sizes());
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), N = B * T;
  const int64_t Nq = s.heads, Nkv = s.kv_heads, D = s.head_dim;
  const ProjCtx pq = MakeProj(w, s, in, Proj::kQ), pk = MakeProj(w, s, in, Proj::kK), pv = MakeProj(w, s, in, Proj::kV);
  const ProjCtx po = MakeProj(w, s, in, Proj::kO);
  const ProjCtx pg = MakeProj(w, s, in, Proj::kGate), pu = MakeProj(w, s, in, Proj::kUp),
                pd = MakeProj(w, s, in, Proj::kDown);

  // q, k, v.
  at::Tensor q, k, v;
  {
    const bool graph = NeedsGraph(x, w, {Proj::kQ, Proj::kK, Proj::kV});
    at::Tensor xa[3], rstd;
    {
      at::NoGradGuard no_grad;
      RmsNormResult n = RmsNormForward(x.view({N, H}), w.input_norm, s.rms_eps);
      rstd = n.rstd;
      at::Tensor yq = ProjectForward(pq, n.y, B, T, &xa[0]);
      at::Tensor yk = ProjectForward(pk, n.y, B, T, &xa[1]);
      at::Tensor yv = ProjectForward(pv, n.y, B, T, &xa[2]);
      q = RopeForward(yq.view({B, T, Nq, D}), in.cos, in.sin);  // new tensors
      k = RopeForward(yk.view({B, T, Nkv, D}), in.cos, in.sin);
      v = at::_unsafe_view(yv, {B, T, Nkv, D});  // not a view: it gets its own grad_fn
    }
    if (graph) {
      auto node = NewNode<QkvNode>();
      node->proj[0] = pq;
      node->proj[1] = pk;
      node->proj[2] = pv;
      if (node->Connect(x, {&node->proj[0], &node->proj[1], &node->proj[2]})) {
        node->x = x.detach();
        node->norm_w = w.input_norm;
        node->rstd = rstd;
        for (int i = 0; i < 3; ++i) node->xa[i] = xa[i];
        node->cos = in.cos;
        node->sin = in.sin;
        node->eps = s.rms_eps;
        node->B = B, node->T = T, node->Nq = Nq, node->Nkv = Nkv, node->D = D;
        Attach(node, {&q, &k, &v});
      }
    }
  }

  at::Tensor attn = CausalAttention(q, k, v, in.attention, 1.0 / std::sqrt(static_cast<double>(D)));  // [B, T, Nq, D]

  // o projection and the first residual.
  at::Tensor o;
  {
    const at::Tensor a = attn.contiguous();
    at::Tensor xa;
    {
      at::NoGradGuard no_grad;
      o = at::_unsafe_view(ProjectForward(po, a.view({N, Nq * D}), B, T, &xa), {B, T, H});
    }
    if (NeedsGraph(a, w, {Proj::kO})) {
      auto node = NewNode<LinearNode>();
      node->proj = po;
      if (node->Connect(a, {&node->proj})) {
        if (po.adapted()) node->x = a.detach();
        node->xa = xa;
        node->B = B, node->T = T;
        node->in_sizes = a.sizes().vec();
        Attach(node, {&o});
      }
    }
  }
  const at::Tensor mid = x + o;  // [B, T, H]

  // MLP and the second residual.
  at::Tensor m;
  {
    const bool graph = NeedsGraph(mid, w, {Proj::kGate, Proj::kUp, Proj::kDown});
    at::Tensor rstd, g, u, act, xa_g, xa_u, xa_d;
    {
      at::NoGradGuard no_grad;
      RmsNormResult n = RmsNormForward(mid.view({N, H}), w.post_norm, s.rms_eps);
      rstd = n.rstd;
      g = ProjectForward(pg, n.y, B, T, &xa_g);  // [N, I]
      u = ProjectForward(pu, n.y, B, T, &xa_u);
      n.y.reset();
      act = SwiGluForward(g, u);
      m = at::_unsafe_view(ProjectForward(pd, act, B, T, &xa_d), {B, T, H});
      if (!in.keep_mlp_activation || !graph || !pd.adapted()) act.reset();
    }
    if (graph) {
      auto node = NewNode<MlpNode>();
      node->gate = pg;
      node->up = pu;
      node->down = pd;
      if (node->Connect(mid, {&node->gate, &node->up, &node->down})) {
        node->x = mid.detach();
        node->norm_w = w.post_norm;
        node->rstd = rstd;
        node->g = g;
        node->u = u;
        node->act = act;
        node->xa_gate = xa_g;
        node->xa_up = xa_u;
        node->xa_down = xa_d;
        node->eps = s.rms_eps;
        node->B = B, node->T = T;
        Attach(node, {&m});
      }
    }
  }
  return mid + m;
}

}  // namespace herd::engine
