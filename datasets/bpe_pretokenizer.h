// The LLaMA-3 pre-tokenizer: splits text into the pieces that byte-level BPE encodes one by one,
// exactly as Hugging Face's Split(pattern, behavior: Isolated) with Meta's regex
//
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
//
// written out by hand because std::regex has no \p{L}. Invalid UTF-8 bytes count as single
// characters that are neither letters, numbers nor white space.
#ifndef HERD_DATASETS_BPE_PRETOKENIZER_H_
#define HERD_DATASETS_BPE_PRETOKENIZER_H_

#include <string_view>
#include <vector>

namespace herd::datasets {

// The regex above, as it appears in tokenizer.json (pre_tokenizer Split pattern.Regex).
inline constexpr std::string_view kLlama3SplitPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// The pieces of `text`, in order; they concatenate to `text`. Views into `text`.
std::vector<std::string_view> SplitLlama3(std::string_view text);

}  // namespace herd::datasets

#endif  // HERD_DATASETS_BPE_PRETOKENIZER_H_
