// herd-prepare-bench: how fast preparation is, against the reference tokenizers, on one generated
// corpus (deterministic text records from a seeded word list with non-ASCII words), for each
// thread count:
//   (a) Herd's whole preparation path (JSONL parse, template, tokenise, pack, write) with a
//       SentencePiece model vs spm_encode on the raw text of the same records (spm_encode is
//       single-threaded: N threads are N processes on N contiguous parts);
//   (b) Herd's byte-level BPE tokenizer vs Hugging Face `tokenizers` (encode_batch with
//       RAYON_NUM_THREADS=N) on the same texts, tokenisation only, on a tokenizer.json that the
//       bench trains with `tokenizers` (LLaMA-3 pre-tokenizer), and Herd's whole path with it.
// Prints one JSON line per measurement, then a table with the issue's goals: the whole path
// >= 0.95x spm_encode, BPE >= 0.8x tokenizers, 2 threads >= 1.8x 1 thread. A benchmark, not a
// test: figures depend on the machine and its load, which it prints.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "CLI/CLI.hpp"
#include "common/file_util.h"
#include "common/status.h"
#include "common/strings.h"
#include "datasets/bpe_tokenizer.h"
#include "datasets/prepare.h"
#include "datasets/sentencepiece_tokenizer.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace herd::datasets {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

#ifndef HERD_BENCH_PYTHON
#define HERD_BENCH_PYTHON "python3"
#endif
#ifndef HERD_BENCH_MAKE_TINY_MODEL
#define HERD_BENCH_MAKE_TINY_MODEL ""
#endif

// The Python half: trains the BPE and times `tokenizers`.
constexpr char kPythonHelper[] = R"PY(
import json, sys, time
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"""
         r"""[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
mode, corpus, target = sys.argv[1], sys.argv[2], sys.argv[3]
with open(corpus, encoding="utf-8") as f:
    lines = f.read().split("\n")
if lines and lines[-1] == "":
    lines.pop()
if mode == "train":
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=int(sys.argv[4]), show_progress=False,
                                  special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(lines[:20000], trainer)
    tok.save(target + "/tokenizer.json")
    with open(target + "/tokenizer_config.json", "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}, f)
else:
    tok = Tokenizer.from_file(target + "/tokenizer.json")
    seconds, tokens = 0.0, 0
    for i in range(0, len(lines), 8192):
        batch = lines[i:i + 8192]
        t0 = time.perf_counter()
        encodings = tok.encode_batch(batch, add_special_tokens=False)
        seconds += time.perf_counter() - t0
        tokens += sum(len(e.ids) for e in encodings)
    print(json.dumps({"seconds": seconds, "tokens": tokens}))
)PY";

// SplitMix64: the corpus is the same on every machine.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  size_t Below(size_t n) { return static_cast<size_t>(Next() % n); }
  double Unit() { return static_cast<double>(Next() >> 11) / static_cast<double>(1ULL << 53); }

 private:
  uint64_t state_;
};

// About 4000 words: mostly Latin syllables (some accented), Cyrillic, Greek, CJK, a few emoji.
std::vector<std::string> WordList(Rng& rng) {
  const std::vector<std::vector<std::string>> scripts = {
      {"ka", "lo", "mi", "ne", "ru", "st", "th", "an", "er", "in", "on", "re", "ti", "ve", "ba",
       "co", "de", "fu", "ga", "ho", "ju", "pr", "qu", "sa", "tr", "wo", "ex", "ly", "ing", "ed"},
      {"é", "ü", "ñ", "ø", "ç", "à", "ß", "ő", "ł", "å"},
      {"ба", "ло", "ми", "не", "ру", "ст", "ва", "ко", "да", "жи", "щу", "ёл"},
      {"κα", "λο", "μι", "νε", "ρυ", "στ", "θη", "αν"},
      {"東", "京", "語", "学", "生", "日", "本", "中", "国", "人", "大", "小", "山", "川"},
      {"🦙", "🚀", "✨", "👍🏽", "❤️"},
  };
  std::vector<std::string> words;
  for (int i = 0; i < 4000; ++i) {
    const double u = rng.Unit();
    std::string w;
    if (u < 0.80) {
      const int n = 1 + static_cast<int>(rng.Below(4));
      for (int k = 0; k < n; ++k) {
        w += scripts[0][rng.Below(scripts[0].size())];
        if (rng.Unit() < 0.05) w += scripts[1][rng.Below(scripts[1].size())];
      }
    } else if (u < 0.88) {
      for (int k = 0, n = 1 + static_cast<int>(rng.Below(3)); k < n; ++k) {
        w += scripts[2][rng.Below(scripts[2].size())];
      }
    } else if (u < 0.92) {
      for (int k = 0, n = 1 + static_cast<int>(rng.Below(3)); k < n; ++k) {
        w += scripts[3][rng.Below(scripts[3].size())];
      }
    } else if (u < 0.97) {
      for (int k = 0, n = 1 + static_cast<int>(rng.Below(3)); k < n; ++k) {
        w += scripts[4][rng.Below(scripts[4].size())];
      }
    } else if (u < 0.98) {
      w = scripts[5][rng.Below(scripts[5].size())];
    } else {
      w = std::to_string(rng.Below(100000));
    }
    words.push_back(std::move(w));
  }
  return words;
}

struct Corpus {
  std::string jsonl, text;  // the same records as {"text": ...} lines and as raw lines
  int64_t records = 0;
  int64_t text_bytes = 0;
};

// `megabytes` of raw text in records of one to eight sentences, words drawn with a Zipf-like skew.
absl::StatusOr<Corpus> MakeCorpus(const std::string& dir, int64_t megabytes, uint64_t seed) {
  Rng rng(seed);
  const std::vector<std::string> words = WordList(rng);
  Corpus c{dir + "/corpus.jsonl", dir + "/corpus.txt"};
  std::ofstream jsonl(c.jsonl, std::ios::binary), text(c.text, std::ios::binary);
  const char* ends[] = {".", ".", ".", "?", "!", "…"};
  std::string record;
  while (c.text_bytes < megabytes << 20) {
    record.clear();
    for (int s = 0, n = 1 + static_cast<int>(rng.Below(8)); s < n; ++s) {
      if (s > 0) record += ' ';
      for (int w = 0, m = 4 + static_cast<int>(rng.Below(16)); w < m; ++w) {
        if (w > 0) record += rng.Unit() < 0.08 ? ", " : " ";
        const double u = rng.Unit();
        std::string word = words[static_cast<size_t>(u * u * u * static_cast<double>(words.size()))];
        if (w == 0 && !word.empty() && word[0] >= 'a' && word[0] <= 'z') word[0] -= 32;
        record += word;
      }
      record += ends[rng.Below(6)];
    }
    jsonl << nlohmann::json{{"text", record}}.dump() << '\n';
    text << record << '\n';
    ++c.records;
    c.text_bytes += static_cast<int64_t>(record.size()) + 1;
  }
  jsonl.close();
  text.close();
  if (!jsonl || !text) return absl::InternalError("writing the corpus in " + dir);
  return c;
}

// Runs the commands at once and waits for all; the wall time in seconds.
absl::StatusOr<double> RunAll(const std::vector<std::vector<std::string>>& commands,
                              const std::vector<std::pair<std::string, std::string>>& env = {}) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  const auto start = Clock::now();
  std::vector<pid_t> pids;
  for (const auto& cmd : commands) {
    std::vector<std::string> args = cmd;
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid;
    if (int e = posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), envp.data()); e != 0) {
      return absl::InternalError(herd::StrCat("cannot run ", cmd[0], ": ", std::strerror(e)));
    }
    pids.push_back(pid);
  }
  bool ok = true;
  for (pid_t pid : pids) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!ok) return absl::InternalError(herd::StrCat(commands[0][0], " failed"));
  return seconds;
}

// Splits the raw text into `n` contiguous parts of whole lines.
absl::StatusOr<std::vector<std::string>> SplitText(const std::string& path, int n) {
  HERD_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  std::vector<std::string> parts;
  size_t begin = 0;
  for (int i = 0; i < n; ++i) {
    size_t end = i + 1 == n ? text.size() : text.size() * (i + 1) / n;
    if (end < text.size()) end = text.find('\n', end) + 1;
    const std::string part = herd::StrCat(path, ".part", n, ".", i);
    HERD_RETURN_IF_ERROR(WriteFileAtomic(part, std::string_view(text).substr(begin, end - begin)));
    parts.push_back(part);
    begin = end;
  }
  return parts;
}

int64_t CountIds(const std::vector<std::string>& files) {
  int64_t n = 0;
  for (const std::string& f : files) {
    std::ifstream in(f);
    std::string id;
    while (in >> id) ++n;
  }
  return n;
}

struct Measurement {
  std::string bench, impl;
  int threads = 1;
  double seconds = 0;
  int64_t tokens = 0;
  int64_t text_bytes = 0;

  double tokens_per_s() const { return static_cast<double>(tokens) / seconds; }
  std::string Json() const {
    return nlohmann::json{{"bench", bench},
                          {"impl", impl},
                          {"threads", threads},
                          {"seconds", seconds},
                          {"tokens", tokens},
                          {"tokens_per_s", tokens_per_s()},
                          {"text_mb_per_s", static_cast<double>(text_bytes) / seconds / 1e6}}
        .dump();
  }
};

// The fastest of `reps` runs.
template <typename F>
absl::StatusOr<Measurement> Best(int reps, F run) {
  absl::StatusOr<Measurement> best;
  for (int r = 0; r < reps; ++r) {
    absl::StatusOr<Measurement> m = run();
    if (!m.ok()) return m.status();
    if (!best.ok() || m->seconds < best->seconds) best = m;
  }
  return best;
}

absl::StatusOr<Measurement> WholePath(const Corpus& corpus, const Tokenizer& tokenizer,
                                      const std::string& bench, int threads,
                                      const std::string& dir) {
  PrepareOptions o;
  o.packing.max_seq_len = 4096;
  o.threads = threads;
  o.output_path = dir + "/bench.safetensors";
  const auto start = Clock::now();
  HERD_ASSIGN_OR_RETURN(PrepareResult r, PrepareJsonl(corpus.jsonl, tokenizer, o));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (r.train.truncated > 0) return absl::InternalError("records were truncated; raise max_seq_len");
  return Measurement{bench, "herd", threads, seconds, r.train.tokens, corpus.text_bytes};
}

absl::StatusOr<Measurement> SpmEncode(const Corpus& corpus, const std::string& spm_encode,
                                      const std::string& model, int threads) {
  HERD_ASSIGN_OR_RETURN(std::vector<std::string> parts, SplitText(corpus.text, threads));
  std::vector<std::vector<std::string>> commands;
  std::vector<std::string> outputs;
  for (const std::string& p : parts) {
    outputs.push_back(p + ".ids");
    commands.push_back({spm_encode, "--model=" + model + "/tokenizer.model", "--output_format=id",
                        "--input=" + p, "--output=" + outputs.back()});
  }
  HERD_ASSIGN_OR_RETURN(const double seconds, RunAll(commands));
  return Measurement{"whole_path_spm", "spm_encode", threads, seconds, CountIds(outputs),
                     corpus.text_bytes};
}

absl::StatusOr<Measurement> HerdEncode(const std::vector<std::string>& texts,
                                       const Tokenizer& tokenizer, int threads,
                                       int64_t text_bytes) {
  std::atomic<size_t> next{0};
  std::atomic<int64_t> tokens{0};
  std::atomic<bool> failed{false};
  constexpr size_t kChunk = 256;
  const auto work = [&] {
    int64_t mine = 0;
    for (size_t begin; (begin = next.fetch_add(kChunk)) < texts.size();) {
      for (size_t i = begin; i < std::min(begin + kChunk, texts.size()); ++i) {
        absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(texts[i], TextStart::kDocument);
        if (!ids.ok()) failed = true;
        if (ids.ok()) mine += static_cast<int64_t>(ids->size());
      }
    }
    tokens += mine;
  };
  const auto start = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (failed) return absl::InternalError("the BPE tokenizer refused a text");
  return Measurement{"bpe_encode", "herd", threads, seconds, tokens.load(), text_bytes};
}

absl::StatusOr<Measurement> TokenizersEncode(const std::string& python, const std::string& helper,
                                             const Corpus& corpus, const std::string& bpe_dir,
                                             int threads, const std::string& dir) {
  const std::string out = dir + "/tokenizers.json";
  // The helper prints its own timing (tokenisation only, like HerdEncode); stdout to a file.
  const std::string cmd = herd::StrCat("RAYON_NUM_THREADS=", threads,
                                       " TOKENIZERS_PARALLELISM=true '", python, "' '", helper,
                                       "' encode '", corpus.text, "' '", bpe_dir, "' > '", out, "'");
  HERD_RETURN_IF_ERROR(RunAll({{"/bin/sh", "-c", cmd}}).status());
  HERD_ASSIGN_OR_RETURN(std::string text, ReadFile(out));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return absl::InternalError("tokenizers helper printed " + text);
  return Measurement{"bpe_encode", "tokenizers", threads, j["seconds"].get<double>(),
                     j["tokens"].get<int64_t>(), corpus.text_bytes};
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return herd::StrCat(a, " ", b, " ", c);
}

struct Flags {
  std::string spm_model, bpe_model, python = HERD_BENCH_PYTHON, spm_encode = "spm_encode";
  std::string make_tiny_model = HERD_BENCH_MAKE_TINY_MODEL, work_dir;
  int64_t megabytes = 64;
  std::vector<int> threads = {1, 2};
  int reps = 1;
  int bpe_vocab = 8000;
  uint64_t seed = 7;
  bool skip_bpe = false;
};

absl::Status Run(Flags f) {
  const std::string dir = f.work_dir.empty()
                              ? (fs::temp_directory_path() / "herd-prepare-bench").string()
                              : f.work_dir;
  fs::create_directories(dir);
  const std::string load_before = LoadAverage();
  std::cout << nlohmann::json{{"load_average", load_before},
                              {"cpus", std::thread::hardware_concurrency()},
                              {"work_dir", dir}}
                   .dump()
            << std::endl;
  if (f.spm_model.empty()) {
    if (f.make_tiny_model.empty()) return absl::InvalidArgumentError("--spm-model is required");
    f.spm_model = dir + "/tiny";
    HERD_RETURN_IF_ERROR(RunAll({{f.make_tiny_model, "--out", f.spm_model}}).status());
  }
  HERD_ASSIGN_OR_RETURN(const Corpus corpus, MakeCorpus(dir, f.megabytes, f.seed));
  std::cout << nlohmann::json{{"corpus", corpus.jsonl},
                              {"records", corpus.records},
                              {"text_bytes", corpus.text_bytes}}
                   .dump()
            << std::endl;
  HERD_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> spm, LoadTokenizer(f.spm_model));

  std::vector<Measurement> all;
  const auto report = [&](absl::StatusOr<Measurement> m) -> absl::Status {
    if (!m.ok()) return m.status();
    std::cout << m->Json() << std::endl;
    all.push_back(*m);
    return absl::OkStatus();
  };
  for (int t : f.threads) {
    HERD_RETURN_IF_ERROR(
        report(Best(f.reps, [&] { return WholePath(corpus, *spm, "whole_path_spm", t, dir); })));
    HERD_RETURN_IF_ERROR(
        report(Best(f.reps, [&] { return SpmEncode(corpus, f.spm_encode, f.spm_model, t); })));
  }

  if (!f.skip_bpe) {
    const std::string helper = dir + "/tokenizers_helper.py";
    HERD_RETURN_IF_ERROR(WriteFileAtomic(helper, kPythonHelper));
    std::string bpe_dir = f.bpe_model;
    if (bpe_dir.empty()) {
      bpe_dir = dir + "/bpe";
      fs::create_directories(bpe_dir);
      HERD_RETURN_IF_ERROR(RunAll({{f.python, helper, "train", corpus.text, bpe_dir,
                                    std::to_string(f.bpe_vocab)}})
                               .status());
    }
    HERD_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> bpe, LoadBpeTokenizer(bpe_dir));
    std::vector<std::string> texts;
    {
      std::ifstream in(corpus.text, std::ios::binary);
      for (std::string line; std::getline(in, line);) texts.push_back(std::move(line));
    }
    for (int t : f.threads) {
      HERD_RETURN_IF_ERROR(report(
          Best(f.reps, [&] { return HerdEncode(texts, *bpe, t, corpus.text_bytes); })));
      HERD_RETURN_IF_ERROR(report(Best(f.reps, [&] {
        return TokenizersEncode(f.python, helper, corpus, bpe_dir, t, dir);
      })));
      HERD_RETURN_IF_ERROR(
          report(Best(f.reps, [&] { return WholePath(corpus, *bpe, "whole_path_bpe", t, dir); })));
    }
  }
  std::cout << nlohmann::json{{"load_average_after", LoadAverage()}}.dump() << std::endl;

  // The table: Herd against its reference at each thread count (speed on the same text, i.e.
  // reference time / Herd time), then Herd's own scaling.
  const auto find = [&](const std::string& bench, const std::string& impl,
                        int threads) -> const Measurement* {
    for (const Measurement& m : all) {
      if (m.bench == bench && m.impl == impl && m.threads == threads) return &m;
    }
    return nullptr;
  };
  std::printf("\n%-34s %7s %14s %14s %9s %7s\n", "comparison", "threads", "herd tok/s",
              "ref tok/s", "speed", "goal");
  const struct {
    const char* bench;
    const char* ref;
    const char* name;
    double goal;
  } rows[] = {{"whole_path_spm", "spm_encode", "whole path (spm) vs spm_encode", 0.95},
              {"bpe_encode", "tokenizers", "bpe encode vs tokenizers", 0.8}};
  for (const auto& row : rows) {
    for (int t : f.threads) {
      const Measurement* h = find(row.bench, "herd", t);
      const Measurement* r = find(row.bench, row.ref, t);
      if (!h || !r) continue;
      const double speed = r->seconds / h->seconds;
      std::printf("%-34s %7d %14.0f %14.0f %8.2fx %6.2fx %s\n", row.name, t, h->tokens_per_s(),
                  r->tokens_per_s(), speed, row.goal, speed >= row.goal ? "met" : "MISSED");
    }
  }
  for (const char* bench : {"whole_path_spm", "bpe_encode", "whole_path_bpe"}) {
    const Measurement* one = find(bench, "herd", 1);
    for (int t : f.threads) {
      const Measurement* m = find(bench, "herd", t);
      if (!one || !m || t == 1) continue;
      const double scale = one->seconds / m->seconds;
      const double goal = 0.9 * t;
      std::printf("%-34s %7d %14.0f %14s %8.2fx %6.2fx %s\n",
                  herd::StrCat("herd ", bench, " scaling").c_str(), t, m->tokens_per_s(), "-",
                  scale, goal, scale >= goal ? "met" : "MISSED");
    }
  }
  std::printf("load average (1, 5, 15 min) before: %s, after: %s; %u CPUs\n",
              load_before.c_str(), LoadAverage().c_str(), std::thread::hardware_concurrency());
  return absl::OkStatus();
}

}  // namespace
}  // namespace herd::datasets

int main(int argc, char** argv) {
  CLI::App app{"herd-prepare-bench: preparation and tokenizer speed against spm_encode and "
               "Hugging Face tokenizers"};
  herd::datasets::Flags f;
  app.add_option("--spm-model", f.spm_model,
                 "Model directory with tokenizer.model (default: a fresh herd-make-tiny-model)");
  app.add_option("--bpe-model", f.bpe_model,
                 "Directory with tokenizer.json (default: trained on the corpus with tokenizers)");
  app.add_option("--python", f.python, "Python with the tokenizers package")->capture_default_str();
  app.add_option("--spm-encode", f.spm_encode, "spm_encode binary")->capture_default_str();
  app.add_option("--make-tiny-model", f.make_tiny_model, "herd-make-tiny-model binary")
      ->capture_default_str();
  app.add_option("--work-dir", f.work_dir, "Where the corpus and outputs go (default: $TMPDIR)");
  app.add_option("--mb", f.megabytes, "Megabytes of raw text in the corpus")->capture_default_str();
  app.add_option("--threads", f.threads, "Thread counts to measure")->capture_default_str();
  app.add_option("--reps", f.reps, "Runs per measurement; the fastest counts")->capture_default_str();
  app.add_option("--bpe-vocab", f.bpe_vocab, "Vocabulary of the trained BPE")->capture_default_str();
  app.add_option("--seed", f.seed, "Corpus seed")->capture_default_str();
  app.add_flag("--skip-bpe", f.skip_bpe, "Only the SentencePiece comparison");
  CLI11_PARSE(app, argc, argv);
  absl::Status s = herd::datasets::Run(f);
  if (!s.ok()) {
    std::cerr << "herd-prepare-bench: " << s.message() << "\n";
    return 1;
  }
  return 0;
}
