// The decoder layer's autograd nodes. Shapes: B batch, T tokens, N = B·T, H hidden, Nq/Nkv heads,
// D head dim, I intermediate, r LoRA rank, s LoRA scale. "ct" is the compute dtype (the frozen
// weights'), "lt" the LoRA parameters' dtype.
#include "trainer/engine/model/decoder_ops.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <functional>
#include <initializer_list>
#include <vector>

#include "trainer/engine/kernels/fused_ops.h"
#include "trainer/engine/model/decoder_projections.h"

namespace herd::engine {
namespace {

using decoder::AdapterGroup;
using decoder::FoldedInput;
using decoder::FoldedProject;
using decoder::GroupBackward;
using decoder::GroupForward;
using decoder::MakeGroup;
using decoder::MakeProj;
using decoder::MmTo;
using decoder::ProjCtx;
using decoder::ProjectBackward;
using decoder::ProjectForward;
using decoder::ScaledMm;
using decoder::StackFits;
using torch::autograd::variable_list;

// A node whose next edges are [x, then A and B of each adapted projection it owns].
class LayerNode : public torch::autograd::Node {
 public:
  // Returns false when nothing needs a gradient (then the caller attaches nothing).
  // `residual`: an input added to the output as it is (its edge follows x's); undefined for none.
  bool Connect(const at::Tensor& x, std::initializer_list<const ProjCtx*> projs,
               const at::Tensor& residual = at::Tensor()) {
    torch::autograd::edge_list edges;
    bool any = false;
    auto add = [&](const at::Tensor& t) {
      const bool g = t.defined() && t.requires_grad();
      any = any || g;
      edges.push_back(g ? torch::autograd::impl::gradient_edge(t) : torch::autograd::Edge());
    };
    add(x);
    if (residual.defined()) add(residual);
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
  // The group's members' gradients: A's from GroupBackward, B's as ProjectBackward made them (db, in
  // the order of `projs`), and the adapters' share of *dx.
  void PutGroup(variable_list& out, const AdapterGroup& g, std::initializer_list<const ProjCtx*> projs,
                const at::Tensor* db, const std::vector<at::Tensor>& u, const at::Tensor& h, at::Tensor* dx) {
    if (!g.active()) return;
    bool want_a = false;
    for (const ProjCtx* p : projs) want_a = want_a || (p->group_col >= 0 && WantA(*p));
    at::Tensor da_cat;
    at::ScalarType lora_dtype = at::kFloat;
    for (const ProjCtx* p : projs) {
      if (p->group_col >= 0) lora_dtype = p->a.scalar_type();
    }
    GroupBackward(g, u, h, want_a, lora_dtype, dx, &da_cat);
    int i = 0;
    for (const ProjCtx* p : projs) {
      if (p->group_col >= 0) {
        const at::Tensor da = WantA(*p) ? da_cat.narrow(0, p->group_col, p->a.size(0)) : at::Tensor();
        Put(out, *p, da, db[i]);
      }
      ++i;
    }
  }
  // A folded group's members' s · x' Aᵀ (into *xa, member order), made again from x' = input() when a
  // B gradient needs it (FoldedInput keeps none).
  // Returns the group's whole [N, n·r] (undefined when no B gradient is wanted).
  at::Tensor RemakeFoldedXa(const AdapterGroup& g, std::initializer_list<const ProjCtx*> projs,
                            std::initializer_list<at::Tensor*> xas, const std::function<at::Tensor()>& input) {
    if (!g.folded) return at::Tensor();
    bool want_b = false;
    for (const ProjCtx* p : projs) want_b = want_b || (p->folded && WantB(*p));
    if (!want_b) return at::Tensor();
    const at::Tensor xa_cat = ScaledMm(input(), g.a_cat.t(), g.scale);
    auto xa = xas.begin();
    for (const ProjCtx* p : projs) {
      if (p->folded) **xa = xa_cat.narrow(1, p->group_col, p->a.size(0));
      ++xa;
    }
    return xa_cat;
  }
  // A folded group's backward when x needs its gradient: Σ dy_p · W'_p over the members is
  // [dx | dy_1 B_1 | dy_2 B_2 | ...] in one buffer (the zero blocks keep each B's product to its own
  // projection), so dy · B costs no pass over dy of its own. Then A's gradients and the adapters'
  // share of dx from that tail, B's from xa (RemakeFoldedXa). `input` makes the members' input x'
  // again (only called when an A gradient is wanted). Returns dx, a [N, in] view of the buffer.
  // With `dy_stack` (the folded members' dy side by side, [N, Σ out]) and `w_stack` (their padded
  // weights one below the other), Σ dy_p · W'_p is that one matmul, with no pass of its own per
  // member over the [N, in + n·r] result.
  at::Tensor FoldedBackward(variable_list& out, const AdapterGroup& g, std::initializer_list<const ProjCtx*> projs,
                            std::initializer_list<const at::Tensor*> dys, std::initializer_list<const at::Tensor*> xas,
                            const std::function<at::Tensor()>& input, const at::Tensor& dy_stack = at::Tensor(),
                            const at::Tensor& w_stack = at::Tensor(), const at::Tensor& xa_cat = at::Tensor()) {
    at::Tensor dx_cat;
    int64_t in = 0;
    auto dy = dys.begin();
    for (const ProjCtx* p : projs) {  // the adapted members first: they span the whole buffer
      if (p->folded) {
        in = p->w.size(1);
        if (!dy_stack.defined()) dx_cat = dx_cat.defined() ? dx_cat.addmm_(**dy, p->w_pad) : at::mm(**dy, p->w_pad);
      }
      ++dy;
    }
    if (dy_stack.defined()) dx_cat = at::mm(dy_stack, w_stack);
    TORCH_CHECK(dx_cat.defined(), "FoldedBackward: a folded group without members");
    at::Tensor dx = dx_cat.narrow(1, 0, in);
    dy = dys.begin();
    for (const ProjCtx* p : projs) {
      if (!p->folded) dx.addmm_(**dy, p->w);
      ++dy;
    }
    const at::Tensor u = dx_cat.narrow(1, in, g.cols).mul(g.scale);  // [N, n·r] = s · dy B, dense
    bool want_a = false;
    at::ScalarType lora_dtype = at::kFloat;
    for (const ProjCtx* p : projs) {
      if (!p->folded) continue;
      want_a = want_a || WantA(*p);
      lora_dtype = p->a.scalar_type();
    }
    at::Tensor da_cat = want_a ? MmTo(u.t(), input(), lora_dtype) : at::Tensor();
    dx.addmm_(u, g.a_cat);
    // B's gradients: with the members' dy side by side, one matmul dy_stackᵀ · xa_cat [Σ out, n·r]
    // whose diagonal blocks they are (the rest, a few GFLOP, is thrown away) instead of one a member.
    at::Tensor db_all;
    if (dy_stack.defined() && xa_cat.defined()) db_all = MmTo(dy_stack.t(), xa_cat, lora_dtype);
    int64_t row = 0;
    dy = dys.begin();
    auto xa = xas.begin();
    for (const ProjCtx* p : projs) {
      if (p->folded) {
        const int64_t r = p->a.size(0), out_features = p->w.size(0);
        const at::Tensor da = WantA(*p) ? da_cat.narrow(0, p->group_col, r) : at::Tensor();
        at::Tensor db;
        if (WantB(*p)) {
          db = db_all.defined() ? db_all.narrow(0, row, out_features).narrow(1, p->group_col, r).contiguous()
                                : MmTo((*dy)->t(), **xa, lora_dtype);
        }
        Put(out, *p, da, db);
        row += out_features;
      }
      ++dy;
      ++xa;
    }
    return dx;
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

// x → RMSNorm → q, k, v (+LoRA) → RoPE(q), RoPE(k). Keeps x, rstd and the three [N, r] xa (a
// folded group's are made again in backward instead).
class QkvNode : public LayerNode {
 public:
  std::string name() const override { return "herd::QkvNode"; }
  ProjCtx proj[3];
  AdapterGroup group;
  at::Tensor w_stack;  // DecoderWeights::w_stack[0], when the group folds
  at::Tensor x, norm_w, rstd, xa[3], cos, sin;
  double eps = 0;
  int64_t B = 0, T = 0, Nq = 0, Nkv = 0, D = 0;

  variable_list apply(variable_list&& grads) override {
    TORCH_CHECK(x.defined(), "QkvNode: backward ran twice (retain_graph is not supported)");
    const int64_t N = B * T;
    const bool want_x = WantX();
    const int64_t heads[3] = {Nq, Nkv, Nkv};
    // dy of q, k, v ([N, out] each): RoPE's backward for q and k. When the group folds into one
    // stacked matmul, the folded members' dy are written side by side into dy_stack (RoPE's
    // backward straight into its columns; v's, small, copied).
    at::Tensor dy[3], dy_stack;
    const bool stacked = group.folded && want_x && StackFits(w_stack, {&proj[0], &proj[1], &proj[2]});
    if (stacked) {
      int64_t cols = 0;
      for (const ProjCtx& p : proj) cols += p.folded ? p.w.size(0) : 0;
      dy_stack = at::empty({N, cols}, x.options());
    }
    int64_t col = 0;
    for (int i = 0; i < 3; ++i) {
      const at::Tensor g = OrZeros(grads[i], {B, T, heads[i], D}, x.options());
      at::Tensor slot;
      if (stacked && proj[i].folded) {
        slot = dy_stack.narrow(1, col, proj[i].w.size(0));
        col += proj[i].w.size(0);
      }
      if (i == 2) {
        dy[i] = slot.defined() ? slot.copy_(g.view({N, -1})) : g.view({N, -1});
      } else if (slot.defined()) {
        RopeBackward(g, cos, sin, slot.view({B, T, heads[i], D}));
        dy[i] = slot;
      } else {
        dy[i] = RopeBackward(g, cos, sin).view({N, -1});
      }
    }
    const at::Tensor x2d = x.view({N, x.size(-1)});
    variable_list out(num_outputs());
    at::Tensor h;  // the projections' input, made again when a gradient needs it
    const std::function<at::Tensor()> input = [&] {
      if (!h.defined()) h = RmsNormForward(x2d, norm_w, eps).y;
      return h;
    };
    const at::Tensor xa_cat = RemakeFoldedXa(group, {&proj[0], &proj[1], &proj[2]}, {&xa[0], &xa[1], &xa[2]}, input);
    if (group.folded && want_x) {
      const at::Tensor dh = FoldedBackward(out, group, {&proj[0], &proj[1], &proj[2]}, {&dy[0], &dy[1], &dy[2]},
                                           {&xa[0], &xa[1], &xa[2]}, input, dy_stack, stacked ? w_stack : at::Tensor(),
                                           xa_cat);
      out[0] = RmsNormBackward(dh, x2d, norm_w, rstd).view(x.sizes());
      return out;
    }
    bool need_h = false;
    for (const ProjCtx& p : proj) need_h = need_h || WantA(p);
    if (need_h) input();
    at::Tensor dh;
    std::vector<at::Tensor> u;
    at::Tensor db[3];
    for (int i = 0; i < 3; ++i) {
      at::Tensor da;
      ProjectBackward(proj[i], dy[i].view({N, -1}), h, xa[i], B, T, want_x ? &dh : nullptr, WantA(proj[i]),
                      WantB(proj[i]), &da, &db[i], &u);
      if (proj[i].group_col < 0) Put(out, proj[i], da, db[i]);
    }
    PutGroup(out, group, {&proj[0], &proj[1], &proj[2]}, db, u, h, want_x ? &dh : nullptr);
    if (want_x) out[0] = RmsNormBackward(dh, x2d, norm_w, rstd).view(x.sizes());
    return out;
  }
  void release_variables() override {
    x.reset();
    rstd.reset();
    for (at::Tensor& t : xa) t.reset();
    group.a_cat.reset();
    w_stack.reset();
  }
};

// One projection (+LoRA) on x [B, T, ...in] → [B, T, out], plus a residual [B, T, out] when
// `residual`. Keeps x (for A's gradient) and xa.
class LinearNode : public LayerNode {
 public:
  std::string name() const override { return "herd::LinearNode"; }
  ProjCtx proj;
  at::Tensor x, xa;
  int64_t B = 0, T = 0;
  bool residual = false;  // edge 1 is the residual's: its gradient is dy as it is

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
    if (residual && task_should_compute_output(1)) out[1] = dy.view({B, T, out_features});
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
  AdapterGroup group;  // gate and up
  at::Tensor w_stack;  // DecoderWeights::w_stack[1], when the group folds
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
    const bool want_x = WantX();
    const bool stacked = group.folded && want_x && StackFits(w_stack, {&gate, &up});
    if (down.rows_folded) {
      // [dy | s·dy·B] · [W ; A] = dy W + s·dy·B·A: the adapter's share of da_act [N, I] comes out of
      // the frozen matmul, for a copy of dy [N, H] instead of a pass over da_act.
      const int64_t r = down.a.size(0);
      at::Tensor wide = at::empty({N, H + r}, dy.options());
      wide.narrow(1, 0, H).copy_(dy);
      const at::Tensor su = ScaledMm(dy, down.b_c, down.scale, wide.narrow(1, H, r));  // s · dy B
      da_act = at::mm(wide, down.w_rows);
      const at::ScalarType lt = down.a.scalar_type();
      if (WantB(down)) db = MmTo(dy.t(), xa_down, lt);  // (xa carries s)
      if (WantA(down)) da = MmTo(su.t(), a, lt);
    } else {
      ProjectBackward(down, dy, a, xa_down, B, T, &da_act, WantA(down), WantB(down), &da, &db);
    }
    Put(out, down, da, db);
    a.reset();
    // With the group folded into one stacked matmul, dg and du are written side by side.
    at::Tensor dgu;
    if (stacked) dgu = at::empty({N, gate.w.size(0) + up.w.size(0)}, g.options());
    auto [dg, du] = stacked ? SwiGluBackward(da_act, g, u, dgu.narrow(1, 0, gate.w.size(0)),
                                             dgu.narrow(1, gate.w.size(0), up.w.size(0)))
                            : SwiGluBackward(da_act, g, u);
    da_act.reset();
    const at::Tensor x2d = x.view({N, H});
    at::Tensor h;  // gate and up's input, made again when a gradient needs it
    const std::function<at::Tensor()> input = [&] {
      if (!h.defined()) h = RmsNormForward(x2d, norm_w, eps).y;
      return h;
    };
    const at::Tensor xa_cat = RemakeFoldedXa(group, {&gate, &up}, {&xa_gate, &xa_up}, input);
    if (group.folded && want_x) {
      const at::Tensor dh = FoldedBackward(out, group, {&gate, &up}, {&dg, &du}, {&xa_gate, &xa_up}, input, dgu,
                                           stacked ? w_stack : at::Tensor(), xa_cat);
      dg.reset();
      du.reset();
      // The output is x + MLP(x): x's gradient is the norm's plus dy as it is.
      out[0] = RmsNormBackward(dh, x2d, norm_w, rstd, /*add=*/dy).view(x.sizes());
      return out;
    }
    if (WantA(gate) || WantA(up)) input();
    at::Tensor dh;
    std::vector<at::Tensor> gu_u;
    at::Tensor gu_db[2];
    ProjectBackward(gate, dg, h, xa_gate, B, T, want_x ? &dh : nullptr, WantA(gate), WantB(gate), &da, &gu_db[0],
                    &gu_u);
    if (gate.group_col < 0) Put(out, gate, da, gu_db[0]);
    dg.reset();
    ProjectBackward(up, du, h, xa_up, B, T, want_x ? &dh : nullptr, WantA(up), WantB(up), &da, &gu_db[1], &gu_u);
    if (up.group_col < 0) Put(out, up, da, gu_db[1]);
    du.reset();
    PutGroup(out, group, {&gate, &up}, gu_db, gu_u, h, want_x ? &dh : nullptr);
    // The output is x + MLP(x): x's gradient is the norm's plus dy as it is.
    if (want_x) out[0] = RmsNormBackward(dh, x2d, norm_w, rstd, /*add=*/dy).view(x.sizes());
    return out;
  }
  void release_variables() override {
    x.reset();
    rstd.reset();
    g.reset();
    u.reset();
    act.reset();
    group.a_cat.reset();
    w_stack.reset();
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
  ProjCtx pq = MakeProj(w, s, in, Proj::kQ), pk = MakeProj(w, s, in, Proj::kK), pv = MakeProj(w, s, in, Proj::kV);
  ProjCtx po = MakeProj(w, s, in, Proj::kO);
  ProjCtx pg = MakeProj(w, s, in, Proj::kGate), pu = MakeProj(w, s, in, Proj::kUp), pd = MakeProj(w, s, in, Proj::kDown);
  const AdapterGroup qkv_group = MakeGroup({&pq, &pk, &pv}, w.lora_a_cat[0]);
  const AdapterGroup mlp_group = MakeGroup({&pg, &pu}, w.lora_a_cat[1]);
  // o and down alone: groups of one, inactive; they settle their A and B copies (and down's fold).
  MakeGroup({&po});
  MakeGroup({&pd});

  // q, k, v.
  at::Tensor q, k, v;
  {
    const bool graph = NeedsGraph(x, w, {Proj::kQ, Proj::kK, Proj::kV});
    at::Tensor xa[3], rstd;
    {
      at::NoGradGuard no_grad;
      RmsNormResult n;
      at::Tensor yq, yk, yv;
      if (qkv_group.folded) {
        const at::Tensor buf = FoldedInput(qkv_group, x.view({N, H}), w.input_norm, s.rms_eps, &n);
        yq = FoldedProject(pq, buf, n.y);
        yk = FoldedProject(pk, buf, n.y);
        yv = FoldedProject(pv, buf, n.y);
      } else {
        n = RmsNormForward(x.view({N, H}), w.input_norm, s.rms_eps);
        const at::Tensor xa_cat = GroupForward(qkv_group, n.y);
        yq = ProjectForward(pq, n.y, B, T, &xa[0], xa_cat);
        yk = ProjectForward(pk, n.y, B, T, &xa[1], xa_cat);
        yv = ProjectForward(pv, n.y, B, T, &xa[2], xa_cat);
      }
      rstd = n.rstd;
      n.y.reset();
      q = RopeForward(yq.view({B, T, Nq, D}), in.cos, in.sin);  // new tensors
      k = RopeForward(yk.view({B, T, Nkv, D}), in.cos, in.sin);
      v = at::_unsafe_view(yv, {B, T, Nkv, D});  // not a view: it gets its own grad_fn
    }
    if (graph) {
      auto node = NewNode<QkvNode>();
      node->proj[0] = pq;
      node->proj[1] = pk;
      node->proj[2] = pv;
      node->group = qkv_group;
      if (qkv_group.folded) node->w_stack = w.w_stack[0];
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

  // o projection and the first residual: mid = x + o(attn), the add in the matmul's epilogue.
  at::Tensor mid;
  {
    const at::Tensor a = attn.contiguous();
    at::Tensor xa;
    {
      at::NoGradGuard no_grad;
      mid = at::_unsafe_view(ProjectForward(po, a.view({N, Nq * D}), B, T, &xa, {}, x.view({N, H})), {B, T, H});
    }
    if (NeedsGraph(a, w, {Proj::kO}) || (at::GradMode::is_enabled() && x.requires_grad())) {
      auto node = NewNode<LinearNode>();
      node->proj = po;
      node->residual = true;
      if (node->Connect(a, {&node->proj}, x)) {
        if (po.adapted()) node->x = a.detach();
        node->xa = xa;
        node->B = B, node->T = T;
        node->in_sizes = a.sizes().vec();
        Attach(node, {&mid});
      }
    }
  }

  // MLP and the second residual.
  at::Tensor m;
  {
    const bool graph = NeedsGraph(mid, w, {Proj::kGate, Proj::kUp, Proj::kDown});
    at::Tensor rstd, g, u, act, xa_g, xa_u, xa_d;
    {
      at::NoGradGuard no_grad;
      RmsNormResult n;
      if (mlp_group.folded) {
        const at::Tensor buf = FoldedInput(mlp_group, mid.view({N, H}), w.post_norm, s.rms_eps, &n);
        g = FoldedProject(pg, buf, n.y);  // [N, I]
        u = FoldedProject(pu, buf, n.y);
      } else {
        n = RmsNormForward(mid.view({N, H}), w.post_norm, s.rms_eps);
        const at::Tensor xa_cat = GroupForward(mlp_group, n.y);
        g = ProjectForward(pg, n.y, B, T, &xa_g, xa_cat);  // [N, I]
        u = ProjectForward(pu, n.y, B, T, &xa_u, xa_cat);
      }
      rstd = n.rstd;
      n.y.reset();
      act = SwiGluForward(g, u);
      // The second residual, mid + down(...), in the matmul's epilogue.
      m = at::_unsafe_view(ProjectForward(pd, act, B, T, &xa_d, {}, mid.view({N, H})), {B, T, H});
      if (!in.keep_mlp_activation || !graph || !pd.adapted()) act.reset();
    }
    if (graph) {
      auto node = NewNode<MlpNode>();
      node->gate = pg;
      node->up = pu;
      node->down = pd;
      node->group = mlp_group;
      if (mlp_group.folded) node->w_stack = w.w_stack[1];
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
  return m;
}

}  // namespace herd::engine
