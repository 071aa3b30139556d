// TrainingFlopsPerToken: see flops.h.
#include "trainer/engine/model/flops.h"

#include <algorithm>

namespace herd::engine {

double TrainingFlopsPerToken(const LlamaConfig& c, int64_t seq, int64_t r, const std::vector<Proj>& targets) {
  double per_layer = 0, lora_per_layer = 0;
  for (const ProjInfo& p : kProjTable) {
    const auto [out, in] = ProjShape(c, p.proj);
    per_layer += static_cast<double>(out) * static_cast<double>(in);
    if (std::find(targets.begin(), targets.end(), p.proj) != targets.end()) {
      lora_per_layer += static_cast<double>(r) * static_cast<double>(in + out);
    }
  }
  const double attention_width = static_cast<double>(c.num_heads) * static_cast<double>(c.head_dim);
  const double n = c.num_layers * per_layer + static_cast<double>(c.hidden_size) * static_cast<double>(c.vocab_size);
  return 4 * n + 12.0 * c.num_layers * attention_width * static_cast<double>(seq) + 6 * c.num_layers * lora_per_layer;
}

}  // namespace herd::engine
