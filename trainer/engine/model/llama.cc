// LLaMA forward pass with LoRA. Shapes: B batch, T tokens, H hidden, Nq query heads, Nkv key/value
// heads, D head_dim, V vocab.
#include "trainer/engine/model/llama.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "common/safetensors.h"
#include "common/status.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"
#include "trainer/engine/kernels/cast_into.h"
#include "trainer/engine/model/decoder_ops.h"

namespace herd::engine {
namespace {

at::ScalarType FromDtype(Dtype d) {
  switch (d) {
    case Dtype::kF32: return at::kFloat;
    case Dtype::kF16: return at::kHalf;
    case Dtype::kBF16: return at::kBFloat16;
    case Dtype::kF64: return at::kDouble;
    default: return at::kByte;
  }
}

// The weight files of a model directory, each opened once.
absl::StatusOr<std::vector<std::unique_ptr<SafetensorsFile>>> OpenWeights(const std::string& dir) {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  const std::string single = dir + "/model.safetensors";
  if (std::filesystem::exists(single)) {
    HERD_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(single));
    files.push_back(std::move(f));
    return files;
  }
  const std::string index_path = dir + "/model.safetensors.index.json";
  HERD_ASSIGN_OR_RETURN(std::string text, ReadFile(index_path));
  nlohmann::json index = nlohmann::json::parse(text, nullptr, false);
  if (index.is_discarded() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(herd::StrCat(index_path, ": has no weight_map object"));
  }
  std::map<std::string, bool> shards;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos) {
      return absl::InvalidArgumentError(herd::StrCat(index_path, ": weight_map[", tensor, "] is not a file name"));
    }
    shards[file.get<std::string>()] = true;
  }
  for (const auto& [name, unused] : shards) {
    HERD_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(dir + "/" + name));
    files.push_back(std::move(f));
  }
  return files;
}

}  // namespace

double LoraOptions::scale() const { return rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r; }

at::Tensor RopeInverseFrequencies(const LlamaConfig& c) {
  const int64_t dim = c.head_dim;
  // 1 / base^(2i/dim), in float32 as transformers does.
  at::Tensor exponent = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq = 1.0 / at::pow(c.rope_theta, exponent);
  const RopeScaling& s = c.rope_scaling;
  if (s.type == "linear") return inv_freq / s.factor;
  if (s.type != "llama3") return inv_freq;
  const double old_len = static_cast<double>(s.original_max_position_embeddings);
  const double low_freq_wavelen = old_len / s.low_freq_factor;
  const double high_freq_wavelen = old_len / s.high_freq_factor;
  at::Tensor wavelen = 2 * M_PI / inv_freq;
  at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq);
  at::Tensor smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
  at::Tensor medium = at::logical_not(wavelen < high_freq_wavelen).logical_and(at::logical_not(wavelen > low_freq_wavelen));
  return at::where(medium, smoothed, scaled);
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& dir, const LoadOptions& options) {
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  HERD_ASSIGN_OR_RETURN(m->config_, LoadLlamaConfig(dir));
  m->model_dir_ = dir;
  m->load_ = options;
  HERD_ASSIGN_OR_RETURN(auto files, OpenWeights(dir));
  std::map<std::string, at::Tensor> loaded;
  try {
    for (const TensorSpec& spec : BaseTensorSpecs(m->config_)) {
      const SafetensorsTensor* t = nullptr;
      const SafetensorsFile* from = nullptr;
      for (const auto& f : files) {
        if ((t = f->Find(spec.name)) != nullptr) {
          from = f.get();
          break;
        }
      }
      if (t == nullptr) {
        return absl::InvalidArgumentError(herd::StrCat(dir, ": tensor ", spec.name, " is missing from the weights"));
      }
      at::ScalarType type = FromDtype(t->dtype);
      if (type == at::kByte) {
        return absl::InvalidArgumentError(herd::StrCat(from->source(), ": tensor ", spec.name, " has dtype ",
                                                       DtypeName(t->dtype), ", expected a float type"));
      }
      if (t->shape != spec.shape) {
        return absl::InvalidArgumentError(herd::StrCat(from->source(), ": tensor ", spec.name, " has shape [",
                                                       herd::StrJoin(t->shape, ", "), "], config.json implies [",
                                                       herd::StrJoin(spec.shape, ", "), "]"));
      }
      at::Tensor host = at::empty(spec.shape, at::TensorOptions().dtype(type));
      std::memcpy(host.data_ptr(), t->data.data(), t->data.size());  // the mapping may be unaligned
      loaded[spec.name] = host.to(options.device, options.dtype).contiguous();
      m->stored_dtype_[spec.name] = type;
    }
  } catch (const std::exception& e) {
    return absl::InternalError(herd::StrCat("loading ", dir, ": ", e.what()));
  }
  m->Assign(loaded);
  return m;
}

void LlamaModel::Assign(const std::map<std::string, at::Tensor>& loaded) {
  const LlamaConfig& c = config_;
  embed_ = loaded.at(std::string(kEmbedName));
  final_norm_ = loaded.at(std::string(kFinalNormName));
  if (!c.tie_word_embeddings) lm_head_ = loaded.at(std::string(kLmHeadName));
  layers_.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    Layer& l = layers_[i];
    l.input_norm = loaded.at(InputNormName(i));
    l.post_norm = loaded.at(PostAttentionNormName(i));
    for (const ProjInfo& p : kProjTable) {
      l.proj[static_cast<int>(p.proj)] = loaded.at(ProjWeightName(i, p.proj));
      l.adapter[static_cast<int>(p.proj)] = -1;
    }
    ClearAdapterLayout(l);  // (EnableLora lays the adapters out)
  }
  inv_freq_ = RopeInverseFrequencies(c).to(load_.device);
}

absl::StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Random(const LlamaConfig& config, const LoadOptions& options,
                                                              uint64_t seed) {
  HERD_RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  m->config_ = config;
  m->load_ = options;
  std::map<std::string, at::Tensor> made;
  try {
    at::manual_seed(seed);
    const at::TensorOptions to = at::TensorOptions().device(options.device).dtype(options.dtype);
    for (const TensorSpec& spec : BaseTensorSpecs(config)) {
      const bool norm = spec.shape.size() == 1;
      made[spec.name] = norm ? at::ones(spec.shape, to) : at::randn(spec.shape, to).mul_(0.02);
      m->stored_dtype_[spec.name] = options.dtype;
    }
  } catch (const std::exception& e) {
    return absl::ResourceExhaustedError(herd::StrCat("making a random model on ", options.device.str(), ": ", e.what()));
  }
  m->Assign(made);
  return m;
}

absl::Status LlamaModel::EnableLora(const LoraOptions& options, uint64_t seed) {
  if (options.r < 1) return absl::InvalidArgumentError("lora.r must be >= 1");
  if (options.targets.empty()) return absl::InvalidArgumentError("lora.target_modules is empty");
  lora_ = options;
  adapters_.clear();
  try {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    for (int i = 0; i < config_.num_layers; ++i) {
      Layer& l = layers_[i];
      for (const ProjInfo& p : kProjTable) {
        const int k = static_cast<int>(p.proj);
        l.adapter[k] = -1;
        if (std::find(options.targets.begin(), options.targets.end(), p.proj) == options.targets.end()) continue;
        auto [out, in] = ProjShape(config_, p.proj);
        // PEFT: kaiming_uniform_(a=sqrt(5)) on A, i.e. U(-1/sqrt(in), 1/sqrt(in)); B = 0.
        const double bound = 1.0 / std::sqrt(static_cast<double>(in));
        at::Tensor a = at::empty({options.r, in}, at::kFloat).uniform_(-bound, bound, gen);
        at::Tensor b = at::zeros({out, options.r}, at::kFloat);
        a = a.to(load_.device, load_.lora_dtype).set_requires_grad(true);
        b = b.to(load_.device, load_.lora_dtype).set_requires_grad(true);
        l.adapter[k] = static_cast<int>(adapters_.size());
        adapters_.push_back({i, p.proj, a, b});
      }
      LayOutAdapters(l);
    }
  } catch (const std::exception& e) {
    return absl::InternalError(herd::StrCat("creating LoRA adapters: ", e.what()));
  }
  return absl::OkStatus();
}

void LlamaModel::set_fold_adapters(bool on) {
  fold_adapters_ = on;
  for (Layer& l : layers_) LayOutAdapters(l);
}

void LlamaModel::ClearAdapterLayout(Layer& l) {
  for (int k = 0; k < kNumProj; ++k) {
    if (l.pad[k].defined() || l.rows_pad[k].defined()) l.proj[k] = l.proj[k].contiguous();  // (unpad)
    l.pad[k] = l.rows_pad[k] = l.a_c[k] = l.b_c[k] = at::Tensor();
    l.pad_col[k] = 0;
  }
  l.a_cat[0] = l.a_cat[1] = at::Tensor();
  l.stack[0] = l.stack[1] = at::Tensor();
}

void LlamaModel::LayOutAdapters(Layer& l) {
  ClearAdapterLayout(l);
  if (lora_.dropout > 0) return;  // (dropout: each projection masks its own input; casts per forward)
  // The groups of decoder_ops.cc's AdapterGroup: their adapted members in its order, where two or more.
  const std::vector<Proj> groups[2] = {{Proj::kQ, Proj::kK, Proj::kV}, {Proj::kGate, Proj::kUp}};
  std::vector<int> members[2];
  for (int gi = 0; gi < 2; ++gi) {
    for (Proj p : groups[gi]) {
      if (l.adapter[static_cast<int>(p)] >= 0) members[gi].push_back(static_cast<int>(p));
    }
    if (members[gi].size() < 2) members[gi].clear();
  }
  if (fold_adapters_) {
    // The members' padded weights are row blocks of one [Σ out, in + n·r] matrix
    // (DecoderWeights::w_stack), so that the backward's Σ dy_p · W'_p can be one matmul over the
    // members' gradients side by side. Zeros beside each W: the other members' B blocks stay zero;
    // its own is written each forward, and is its B's compute copy.
    for (int gi = 0; gi < 2; ++gi) {
      if (members[gi].empty()) continue;
      const int64_t cols = static_cast<int64_t>(members[gi].size()) * lora_.r;
      int64_t rows = 0;
      for (int k : members[gi]) rows += l.proj[k].size(0);
      const at::Tensor& first = l.proj[members[gi].front()];
      l.stack[gi] = at::zeros({rows, first.size(1) + cols}, first.options());
      int64_t col = 0, row = 0;
      for (int k : members[gi]) {
        const at::Tensor w = l.proj[k];
        const int64_t in = w.size(1);
        at::Tensor pad = l.stack[gi].narrow(0, row, w.size(0));
        row += w.size(0);
        pad.narrow(1, 0, in).copy_(w);
        l.proj[k] = pad.narrow(1, 0, in);
        l.pad[k] = pad;
        l.pad_col[k] = in + col;
        l.b_c[k] = pad.narrow(1, in + col, lora_.r);
        col += lora_.r;
      }
    }
    // down: A's rows under W, so that dh = [dy | s·dy·B] · [W ; A] is one matmul (its input's
    // gradient is the widest of the layer, [N, intermediate]: a pass of its own over it is the
    // cost). Those rows are A's compute copy.
    const int d = static_cast<int>(Proj::kDown);
    if (l.adapter[d] >= 0) {
      const at::Tensor w = l.proj[d];
      at::Tensor rows = at::zeros({w.size(0) + lora_.r, w.size(1)}, w.options());
      rows.narrow(0, 0, w.size(0)).copy_(w);
      l.proj[d] = rows.narrow(0, 0, w.size(0));  // (the first rows: still dense)
      l.rows_pad[d] = rows;
      l.a_c[d] = rows.narrow(0, w.size(0), lora_.r);
    }
  }
  // The remaining compute copies: a group's stacked A's, then buffers of their own for every A and
  // B not already a block of the above.
  for (int gi = 0; gi < 2; ++gi) {
    if (members[gi].empty()) continue;
    const at::Tensor& w = l.proj[members[gi].front()];
    l.a_cat[gi] = at::empty({static_cast<int64_t>(members[gi].size()) * lora_.r, w.size(1)}, w.options());
    for (size_t j = 0; j < members[gi].size(); ++j) {
      l.a_c[members[gi][j]] = l.a_cat[gi].narrow(0, static_cast<int64_t>(j) * lora_.r, lora_.r);
    }
  }
  for (int k = 0; k < kNumProj; ++k) {
    if (l.adapter[k] < 0) continue;
    const at::Tensor& w = l.proj[k];
    if (!l.a_c[k].defined()) l.a_c[k] = at::empty({lora_.r, w.size(1)}, w.options());
    if (!l.b_c[k].defined()) l.b_c[k] = at::empty({w.size(0), lora_.r}, w.options());
  }
}

std::vector<at::Tensor> LlamaModel::LoraParameters() const {
  std::vector<at::Tensor> out;
  out.reserve(2 * adapters_.size());
  for (const Adapter& a : adapters_) {
    out.push_back(a.a);
    out.push_back(a.b);
  }
  return out;
}

at::Tensor LlamaModel::BaseTensor(const std::string& name) const {
  if (name == kEmbedName) return embed_;
  if (name == kFinalNormName) return final_norm_;
  if (name == kLmHeadName) return Head();
  for (int i = 0; i < config_.num_layers; ++i) {
    if (name == InputNormName(i)) return layers_[i].input_norm;
    if (name == PostAttentionNormName(i)) return layers_[i].post_norm;
    for (const ProjInfo& p : kProjTable) {
      // (.contiguous(): a weight stored padded is a strided view; callers get plain [out, in].)
      if (name == ProjWeightName(i, p.proj)) return layers_[i].proj[static_cast<int>(p.proj)].contiguous();
    }
  }
  return at::Tensor();
}

at::Tensor LlamaModel::RmsNorm(const at::Tensor& x, const at::Tensor& weight) const {
  // In float32 whatever the weights' dtype, as transformers does (float64 stays float64).
  at::Tensor x32 = x.scalar_type() == at::kDouble ? x : x.to(at::kFloat);
  at::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (x32 * at::rsqrt(variance + config_.rms_norm_eps)).to(x.scalar_type());
}

at::Tensor LlamaModel::Project(const Layer& layer, int layer_index, Proj proj, const at::Tensor& x,
                               const LayerInputs& in, at::Tensor* lora_x) const {
  const int k = static_cast<int>(proj);
  at::Tensor y = at::linear(x, layer.proj[k]);  // [B, T, out]
  if (layer.adapter[k] < 0) return y;
  const Adapter& ad = adapters_[layer.adapter[k]];
  // x in the LoRA dtype, cast once for all projections of the same input: autograd keeps it for
  // A's gradient, and on bf16 weights each cast is a float32 copy of the input.
  if (!lora_x->defined()) *lora_x = x.to(ad.a.scalar_type());
  at::Tensor xin = *lora_x;  // [B, T, in]
  // No mask is made or applied at dropout 0 (nor in eval): Hidden leaves dropout_keys undefined.
  if (in.dropout_keys.defined()) {
    // A hash of (seed, step, global sequence index, layer, projection, position), computed on x's
    // device: the recompute of a checkpointed layer makes the very same masks, on any device.
    const double keep = 1.0 - lora_.dropout;
    at::Tensor mask = DropoutKeepMask(in.dropout_keys.select(0, layer_index).select(0, k), x.size(1), x.size(2),
                                      keep);  // [B, T, in] bool
    xin = xin * mask / keep;
  }
  at::Tensor delta = at::linear(at::linear(xin, ad.a), ad.b) * lora_.scale();  // [B, T, out]
  return y + delta.to(y.scalar_type());
}

std::vector<at::Tensor> LlamaModel::LayerLoraParameters(int i) const {
  std::vector<at::Tensor> out;
  for (const ProjInfo& p : kProjTable) {
    const int a = layers_[i].adapter[static_cast<int>(p.proj)];
    if (a < 0) continue;
    out.push_back(adapters_[a].a);
    out.push_back(adapters_[a].b);
  }
  return out;
}

at::Tensor LlamaModel::DecoderLayer(int i, const at::Tensor& x, const LayerInputs& in) const {
  if (reference_layers_) return ReferenceDecoderLayer(i, x, in);
  const Layer& l = layers_[i];
  DecoderWeights w;
  w.input_norm = l.input_norm;
  w.post_norm = l.post_norm;
  w.lora_a_cat[0] = l.a_cat[0];
  w.lora_a_cat[1] = l.a_cat[1];
  w.w_stack[0] = l.stack[0];
  w.w_stack[1] = l.stack[1];
  for (int k = 0; k < kNumProj; ++k) {
    w.w[k] = l.proj[k];
    w.w_pad[k] = l.pad[k];
    w.pad_col[k] = l.pad_col[k];
    w.w_rows[k] = l.rows_pad[k];
    w.lora_a_c[k] = l.a_c[k];
    w.lora_b_c[k] = l.b_c[k];
    if (l.adapter[k] < 0) continue;
    w.lora_a[k] = adapters_[l.adapter[k]].a;
    w.lora_b[k] = adapters_[l.adapter[k]].b;
  }
  const DecoderShape shape{.heads = config_.num_heads, .kv_heads = config_.num_kv_heads, .head_dim = config_.head_dim,
                           .rms_eps = config_.rms_norm_eps, .lora_scale = lora_.scale()};
  DecoderInputs din{.cos = in.cos, .sin = in.sin, .attention = in.attention};
  din.keep_mlp_activation = keep_mlp_activations_;
  if (in.dropout_keys.defined()) {
    din.dropout_keys = in.dropout_keys.select(0, i);
    din.keep = 1.0 - lora_.dropout;
  }
  return LeanDecoderLayer(x, w, shape, din);
}

at::Tensor LlamaModel::ReferenceDecoderLayer(int i, const at::Tensor& x, const LayerInputs& in) const {
  const LlamaConfig& c = config_;
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t D = c.head_dim, Nq = c.num_heads, Nkv = c.num_kv_heads;
  const Layer& l = layers_[i];
  auto rotate = [&](const at::Tensor& t) {
    at::Tensor rotated = at::cat({-t.narrow(-1, D / 2, D / 2), t.narrow(-1, 0, D / 2)}, -1);
    return t * in.cos.unsqueeze(1) + rotated * in.sin.unsqueeze(1);
  };
  at::Tensor h = RmsNorm(x, l.input_norm);
  at::Tensor h_lora, attn_lora, mlp_lora, gated_lora;  // each input in the LoRA dtype, made on first use
  at::Tensor q = Project(l, i, Proj::kQ, h, in, &h_lora).view({B, T, Nq, D}).transpose(1, 2);   // [B, Nq, T, D]
  at::Tensor k = Project(l, i, Proj::kK, h, in, &h_lora).view({B, T, Nkv, D}).transpose(1, 2);  // [B, Nkv, T, D]
  at::Tensor v = Project(l, i, Proj::kV, h, in, &h_lora).view({B, T, Nkv, D}).transpose(1, 2);
  q = rotate(q);
  k = rotate(k);
  // Fused attention: plain causal rows take is_causal (flash on CUDA, which reads grouped K/V as
  // they are: no [B, Nq, T, D] copies kept for backward); packed rows a block-diagonal causal mask
  // (the memory-efficient kernel on CUDA, which wants K/V expanded to Nq heads). On CPU both give
  // the numbers of the expanded form (the grouped one sums K/V gradients in another order).
  const bool causal = !in.mask.has_value();
  if (Nkv != Nq && !causal) {
    k = k.repeat_interleave(Nq / Nkv, 1);  // [B, Nq, T, D]
    v = v.repeat_interleave(Nq / Nkv, 1);
  }
  at::Tensor attn = at::scaled_dot_product_attention(q, k, v, in.mask, 0.0, causal,
                                                     1.0 / std::sqrt(static_cast<double>(D)),
                                                     /*enable_gqa=*/Nkv != Nq && causal);
  attn = attn.transpose(1, 2).reshape({B, T, Nq * D});  // [B, T, Nq*D]
  at::Tensor out = x + Project(l, i, Proj::kO, attn, in, &attn_lora);
  h = RmsNorm(out, l.post_norm);
  at::Tensor gated =
      at::silu(Project(l, i, Proj::kGate, h, in, &mlp_lora)) * Project(l, i, Proj::kUp, h, in, &mlp_lora);
  return out + Project(l, i, Proj::kDown, gated, in, &gated_lora);
}

void LlamaModel::PrepareLoraCopies() const {
  std::vector<CastPair> pairs;
  for (const Layer& l : layers_) {
    for (int k = 0; k < kNumProj; ++k) {
      if (l.adapter[k] < 0 || !l.a_c[k].defined()) continue;
      const Adapter& ad = adapters_[l.adapter[k]];
      pairs.push_back({ad.a.detach(), l.a_c[k]});
      pairs.push_back({ad.b.detach(), l.b_c[k]});
    }
  }
  CastInto(pairs);
}

at::Tensor LlamaModel::Hidden(const Batch& batch, const DropoutKey* dropout, bool checkpoint_layers) const {
  const int64_t T = batch.input_ids.size(1);
  if (!reference_layers_ && !adapters_.empty()) PrepareLoraCopies();
  at::Tensor x = at::embedding(embed_, batch.input_ids);  // [B, T, H]

  auto in = std::make_shared<LayerInputs>();
  // RoPE tables. [B, T, D]
  at::Tensor freqs = batch.position_ids.to(at::kFloat).unsqueeze(-1) * inv_freq_.view({1, 1, -1});
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  in->cos = emb.cos().to(x.scalar_type()).contiguous();
  in->sin = emb.sin().to(x.scalar_type()).contiguous();
  if (!reference_layers_) {
    // The flash path cuts the flattened tokens at cu_seqlens and needs no [B, 1, T, T] mask.
    in->attention = MakeAttentionLayout(batch.doc_ids, x.size(0), T, x.device(),
                                        !FlashAttentionApplies(x.device(), x.scalar_type(), config_.head_dim));
  } else if (batch.doc_ids.defined()) {
    // Attention mask: causal, and within a document when the batch is packed. [B, 1, T, T]
    at::Tensor same_doc = batch.doc_ids.unsqueeze(2) == batch.doc_ids.unsqueeze(1);
    at::Tensor causal = at::ones({T, T}, at::TensorOptions().dtype(at::kBool).device(x.device())).tril();
    in->mask = same_doc.logical_and(causal).unsqueeze(1);
  }
  if (dropout != nullptr && lora_.dropout > 0) {
    in->dropout_keys =
        DropoutKeyTable(*dropout, batch.sequence_ids, x.size(0), config_.num_layers, kNumProj, x.device());
  }

  for (int i = 0; i < config_.num_layers; ++i) {
    if (checkpoint_layers) {
      // The closure owns what the recompute reads; the model must outlive the backward.
      x = Checkpointed([this, i, in](const at::Tensor& layer_input) { return DecoderLayer(i, layer_input, *in); },
                       x, LayerLoraParameters(i));
    } else {
      x = DecoderLayer(i, x, *in);
    }
  }
  return reference_layers_ ? RmsNorm(x, final_norm_) : RmsNormNode(x, final_norm_, config_.rms_norm_eps);
}

at::Tensor LlamaModel::Logits(const at::Tensor& hidden) const { return at::linear(hidden, Head()).to(at::kFloat); }

at::Tensor TrainedPositions(const at::Tensor& targets, at::Device device) {
  TORCH_CHECK(targets.device().is_cpu(), "TrainedPositions wants the targets on the host");
  return (targets.reshape({-1}) != -100).nonzero().squeeze(1).to(device, at::kLong);  // [N]
}

LlamaModel::LossSums LlamaModel::Loss(const at::Tensor& hidden, const at::Tensor& targets, int64_t chunk_tokens,
                                      const at::Tensor& trained_positions) const {
  const at::ScalarType acc = hidden.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor t = targets.reshape({-1});  // [B*T]
  at::Tensor trained = trained_positions.defined() ? trained_positions.to(t.device())
                                                   : (t != -100).nonzero().squeeze(1);  // [N]
  at::Tensor rows = hidden.reshape({-1, hidden.size(-1)}).index_select(0, trained);  // [N, H]
  ChunkedCrossEntropyResult ce = ChunkedCrossEntropy(rows, Head(), t.index_select(0, trained), chunk_tokens, acc);
  LossSums sums;
  sums.loss_sum = ce.loss_sum;
  sums.tokens = trained.size(0);
  sums.correct = ce.correct;
  return sums;
}

}  // namespace herd::engine
