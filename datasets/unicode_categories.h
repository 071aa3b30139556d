// Unicode general categories the byte-level BPE pre-tokenizer needs (\p{L}, \p{N}, \s), which
// std::regex cannot express. The tables are generated: see unicode_categories.cc.
#ifndef HERD_DATASETS_UNICODE_CATEGORIES_H_
#define HERD_DATASETS_UNICODE_CATEGORIES_H_

namespace herd::datasets {

bool IsUnicodeLetter(char32_t c);  // general category L* (\p{L})
bool IsUnicodeNumber(char32_t c);  // general category N* (\p{N})

// Unicode's White_Space property, which is what \s means in the Oniguruma regexes of Hugging Face
// tokenizers (not Python's str.isspace(): U+001C..U+001F are not white space here).
inline bool IsUnicodeWhiteSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
         c == 0x205f || c == 0x3000;
}

}  // namespace herd::datasets

#endif  // HERD_DATASETS_UNICODE_CATEGORIES_H_
