// See decoder_projections.h. "ct" is the compute dtype (the frozen weights'), "lt" the LoRA
// parameters' dtype.
#include "trainer/engine/model/decoder_projections.h"

#include <atomic>

#include "trainer/engine/model/lora_dropout.h"

namespace herd::engine::decoder {
namespace {

std::atomic<bool> g_mm_out_dtype{true};  // MmTo: mm's out_dtype overload not refused yet

}  // namespace

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

ProjCtx MakeProj(const DecoderWeights& w, const DecoderShape& s, const DecoderInputs& in, Proj p) {
  ProjCtx c;
  c.k = static_cast<int>(p);
  c.w = w.w[c.k];
  c.a = w.lora_a[c.k];
  c.b = w.lora_b[c.k];
  c.scale = s.lora_scale;
  if (c.adapted()) {
    c.w_pad = w.w_pad[c.k];
    c.pad_col = w.pad_col[c.k];
    c.w_rows = w.w_rows[c.k];
    c.a_c = w.lora_a_c[c.k];  // (prepared for this forward, or undefined: MakeGroup casts)
    c.b_c = w.lora_b_c[c.k];
  }
  if (c.adapted() && in.dropout_keys.defined()) {
    c.keys = in.dropout_keys.select(0, c.k);
    c.keep = in.keep;
  }
  return c;
}

at::Tensor ScaledMm(const at::Tensor& a, const at::Tensor& b, double s, at::Tensor out) {
  if (!out.defined()) out = at::empty({a.size(0), b.size(1)}, a.options());
  return at::addmm_out(out, out, a, b, /*beta=*/0, /*alpha=*/s);
}

at::Tensor AdapterInput(const ProjCtx& p, const at::Tensor& x2d, int64_t B, int64_t T) {
  if (!p.keys.defined()) return x2d;
  at::Tensor mask = DropoutKeepMask(p.keys, T, x2d.size(1), p.keep).view({B * T, x2d.size(1)});  // [N, in] bool
  return (x2d * mask).mul_(1.0 / p.keep);
}

AdapterGroup MakeGroup(std::initializer_list<ProjCtx*> projs, const at::Tensor& prepared_a_cat) {
  AdapterGroup g;
  std::vector<ProjCtx*> adapted;
  bool dropout = false;
  for (ProjCtx* p : projs) {
    if (!p->adapted()) continue;
    adapted.push_back(p);
    dropout = dropout || p->keys.defined();
  }
  if (adapted.size() < 2 || dropout) {
    for (ProjCtx* p : adapted) {
      const int64_t out = p->w.size(0), r = p->a.size(0);
      const bool prepared = p->a_c.defined();
      if (!dropout && p->w_rows.defined() && p->w_rows.size(0) == out + r) {
        // A in its rows under W (cast on the way); those rows are A in the weights' dtype.
        if (!prepared) {
          p->a_c = p->w_rows.narrow(0, out, r);
          p->a_c.copy_(p->a.detach());
        }
        p->rows_folded = true;
      } else if (!prepared) {
        p->a_c = p->a.detach().to(p->w.scalar_type());
      }
      if (!p->b_c.defined()) p->b_c = p->b.detach().to(p->w.scalar_type());
    }
    return g;
  }
  std::vector<at::Tensor> as;
  for (ProjCtx* p : adapted) {
    p->group_col = g.cols;
    g.cols += p->a.size(0);
    as.push_back(p->a.detach());
  }
  g.a_cat = prepared_a_cat.defined() && prepared_a_cat.size(0) == g.cols
                ? prepared_a_cat
                : at::cat(as).to(adapted.front()->w.scalar_type());
  g.scale = adapted.front()->scale;
  // Folded where the weights were stored for it with this very layout.
  g.folded = true;
  for (ProjCtx* p : adapted) {
    const int64_t in = p->w.size(1);
    g.folded = g.folded && p->w_pad.defined() && p->w_pad.size(1) == in + g.cols && p->pad_col == in + p->group_col;
  }
  for (ProjCtx* p : adapted) {
    if (g.folded) {
      // B in its block of the padded weight (cast on the way; already there when prepared): the
      // frozen matmul then adds the adapter, and that block is B in the weights' dtype.
      const at::Tensor block = p->w_pad.narrow(1, p->pad_col, p->b.size(1));
      const bool prepared = p->b_c.defined() && p->b_c.data_ptr() == block.data_ptr() &&
                            p->b_c.strides() == block.strides();
      if (!prepared) block.copy_(p->b.detach());
      p->b_c = block;
      p->folded = true;
    } else if (!p->b_c.defined()) {
      p->b_c = p->b.detach().to(p->w.scalar_type());
    }
  }
  return g;
}

at::Tensor FoldedInput(const AdapterGroup& g, const at::Tensor& x2d, const at::Tensor& norm_w, double eps,
                       RmsNormResult* norm) {
  const int64_t H = x2d.size(1);
  at::Tensor buf = at::empty({x2d.size(0), H + g.cols}, x2d.options());
  *norm = RmsNormForward(x2d, norm_w, eps, buf.narrow(1, 0, H));
  ScaledMm(norm->y, g.a_cat.t(), g.scale, buf.narrow(1, H, g.cols));
  return buf;
}

at::Tensor FoldedProject(const ProjCtx& p, const at::Tensor& buf, const at::Tensor& x2d) {
  if (!p.adapted()) return at::mm(x2d, p.w.t());
  return at::mm(buf, p.w_pad.t());
}

at::Tensor GroupForward(const AdapterGroup& g, const at::Tensor& x2d) {
  return g.active() ? ScaledMm(x2d, g.a_cat.t(), g.scale) : at::Tensor();
}

void GroupBackward(const AdapterGroup& g, const std::vector<at::Tensor>& u, const at::Tensor& h, bool want_a,
                   at::ScalarType lora_dtype, at::Tensor* dx, at::Tensor* da_cat) {
  if (u.empty()) return;
  const at::Tensor u_cat = at::cat(u, 1);  // [N, n·r]
  if (want_a) *da_cat = MmTo(u_cat.t(), h, lora_dtype);
  if (dx != nullptr) dx->addmm_(u_cat, g.a_cat);
}

at::Tensor ProjectForward(const ProjCtx& p, const at::Tensor& x2d, int64_t B, int64_t T, at::Tensor* xa,
                          const at::Tensor& xa_cat, const at::Tensor& residual) {
  at::Tensor y = residual.defined() ? at::addmm(residual, x2d, p.w.t()) : at::mm(x2d, p.w.t());  // [N, out]
  if (!p.adapted()) return y;
  const at::ScalarType ct = x2d.scalar_type();
  TORCH_CHECK(p.b_c.scalar_type() == ct, "ProjectForward: input ", ct, " but weights ", p.b_c.scalar_type());
  if (p.group_col >= 0) {
    *xa = xa_cat.narrow(1, p.group_col, p.a.size(0));  // [N, r]
  } else {
    *xa = ScaledMm(AdapterInput(p, x2d, B, T), p.a_c.t(), p.scale);  // [N, r]
  }
  y.addmm_(*xa, p.b_c.t());
  return y;
}

void ProjectBackward(const ProjCtx& p, const at::Tensor& dy, const at::Tensor& x2d, const at::Tensor& xa, int64_t B,
                     int64_t T, at::Tensor* dx, bool want_a, bool want_b, at::Tensor* da, at::Tensor* db,
                     std::vector<at::Tensor>* group_u) {
  if (dx != nullptr) {
    if (dx->defined()) {
      dx->addmm_(dy, p.w);
    } else {
      *dx = at::mm(dy, p.w);  // [N, in]
    }
  }
  if (!p.adapted()) return;
  const at::ScalarType lt = p.a.scalar_type();
  if (want_b) *db = MmTo(dy.t(), xa, lt);  // [out, r] (xa carries s)
  if (p.group_col >= 0) {  // (every member, so that the list lines up with the group's columns)
    TORCH_CHECK(group_u != nullptr, "ProjectBackward: a group member needs its group's u list");
    group_u->push_back(ScaledMm(dy, p.b_c, p.scale));
    return;
  }
  if (!want_a && dx == nullptr) return;
  at::Tensor u = ScaledMm(dy, p.b_c, p.scale);  // [N, r] = s · dy B
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

bool StackFits(const at::Tensor& stack, std::initializer_list<const ProjCtx*> projs) {
  if (!stack.defined()) return false;
  int64_t row = 0;
  for (const ProjCtx* p : projs) {
    if (!p->folded) continue;
    if (row + p->w_pad.size(0) > stack.size(0) ||
        p->w_pad.data_ptr() != stack.narrow(0, row, p->w_pad.size(0)).data_ptr()) {
      return false;
    }
    row += p->w_pad.size(0);
  }
  return row > 0 && row == stack.size(0);
}

}  // namespace herd::engine::decoder
