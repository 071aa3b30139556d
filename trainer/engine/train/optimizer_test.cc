// AdamW and ClipGradNorm: hand-checked first steps and norms, argument and checkpoint errors, a
// save/load round trip, and PyTorch itself (tests/python/optimizer_reference.py, one run) as the
// reference for five AdamW steps and four clipping cases.
#include "trainer/engine/train/optimizer.h"

#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "common/strings.h"
#include "gtest/gtest.h"
#include "tests/testing/python_script.h"
#include "trainer/engine/tensor_io.h"

namespace herd::engine {
namespace {

#define EXPECT_CONTAINS(text, sub)                                          \
  EXPECT_NE(std::string(text).find(sub), std::string::npos)                 \
      << "expected \"" << (sub) << "\" in: " << (text)

at::Tensor Floats(std::vector<float> values) {
  return at::tensor(at::ArrayRef<float>(values), at::kFloat);
}

// A parameter as the model makes them: float32, requires grad, with `grad` set.
at::Tensor Param(at::Tensor value, at::Tensor grad) {
  at::Tensor p = value.clone().requires_grad_(true);
  if (grad.defined()) p.mutable_grad() = grad;
  return p;
}

// max|a - b| / max|b|, the measure DESIGN.md §5 uses (absolute when b is all zero).
double RelativeError(const at::Tensor& a, const at::Tensor& b) {
  const double diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  const double scale = b.to(at::kDouble).abs().max().item<double>();
  return scale > 0 ? diff / scale : diff;
}

struct FirstStepCase {
  const char* name;
  float param, grad;
  double lr, weight_decay;
  double expected;  // worked out by hand below
};

// Step 1 of Adam: m̂ = g and v̂ = g², so the update is lr·g/(|g| + eps), after p *= 1 - lr·wd.
TEST(AdamWTest, FirstStepByHand) {
  const FirstStepCase cases[] = {
      {"positive grad", 1.0f, 0.5f, 0.1, 0.0, 1.0 - 0.1 * 0.5 / (0.5 + 1e-8)},
      {"negative grad with decay", 1.0f, -2.0f, 0.01, 0.5, 1.0 * (1 - 0.005) + 0.01 * 2 / (2 + 1e-8)},
      {"zero grad only decays", 2.0f, 0.0f, 0.1, 0.1, 2.0 * 0.99},
      {"zero lr changes nothing", 3.0f, 7.0f, 0.0, 0.1, 3.0},
      {"tiny grad still moves lr", 0.0f, 1e-6f, 0.1, 0.0, -0.1 * 1e-6 / (1e-6 + 1e-8)},
  };
  for (const FirstStepCase& c : cases) {
    SCOPED_TRACE(c.name);
    at::Tensor p = Param(Floats({c.param}), Floats({c.grad}));
    auto opt = AdamW::Create({p}, {.weight_decay = c.weight_decay});
    ASSERT_TRUE(opt.ok()) << opt.status();
    ASSERT_TRUE(opt->Step(c.lr).ok());
    EXPECT_EQ(opt->step(), 1);
    EXPECT_NEAR(p.item<float>(), c.expected, 1e-6);
  }
}

TEST(AdamWTest, OptionsValidate) {
  struct Case {
    const char* name;
    AdamWOptions options;
    bool ok;
  };
  const Case cases[] = {
      {"defaults", {}, true},
      {"beta1 zero", {.beta1 = 0.0}, true},
      {"beta1 one", {.beta1 = 1.0}, false},
      {"beta2 negative", {.beta2 = -0.1}, false},
      {"eps zero", {.eps = 0.0}, false},
      {"weight decay negative", {.weight_decay = -1e-3}, false},
      {"weight decay nan", {.weight_decay = std::nan("")}, false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(c.options.Validate().ok(), c.ok) << c.name << ": " << c.options.Validate();
  }
}

TEST(AdamWTest, CreateRejectsNonFloat32Parameters) {
  auto opt = AdamW::Create({at::zeros({2}, at::kDouble)}, {});
  ASSERT_EQ(opt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(opt.status().message(), "parameter 0 is Double");
  EXPECT_EQ(AdamW::Create({at::Tensor()}, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(AdamWTest, BadStepChangesNothing) {
  struct Case {
    const char* name;
    at::Tensor grad1;  // gradient of the second parameter
    double lr;
    const char* message;
  };
  const Case cases[] = {
      {"missing grad", at::Tensor(), 1e-3, "parameter 1 [3] has no gradient"},
      {"shape mismatch", at::ones({4}), 1e-3, "gradient of parameter 1 is [4] Float"},
      {"dtype mismatch", at::ones({3}, at::kDouble), 1e-3, "is [3] Double"},
      {"negative lr", at::ones({3}), -1e-3, "learning rate -0.001"},
      {"nan lr", at::ones({3}), std::nan(""), "learning rate nan"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    at::Tensor p0 = Param(at::ones({2}), at::ones({2}));
    at::Tensor p1 = Param(at::ones({3}), c.grad1);
    auto opt = AdamW::Create({p0, p1}, {.weight_decay = 0.1});
    ASSERT_TRUE(opt.ok());
    absl::Status s = opt->Step(c.lr);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_CONTAINS(s.message(), c.message);
    EXPECT_EQ(opt->step(), 0);
    EXPECT_TRUE(at::equal(p0, at::ones({2})));  // checked before anything moved
  }
}

// Gradients for step s of the round-trip test, the same whichever optimizer takes the step.
void SetGrads(const std::vector<at::Tensor>& params, int s) {
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].mutable_grad() =
        at::sin(at::arange(params[i].numel(), at::kFloat).reshape(params[i].sizes()) * (s + 1) +
                static_cast<double>(i));
  }
}

TEST(AdamWTest, SaveLoadResumesExactly) {
  const AdamWOptions options{.weight_decay = 0.05};
  auto make = [] {
    return std::vector<at::Tensor>{Param(at::linspace(-1, 1, 12).reshape({3, 4}), {}),
                                   Param(at::linspace(2, 3, 5), {})};
  };
  std::vector<at::Tensor> straight = make();
  auto a = AdamW::Create(straight, options);
  ASSERT_TRUE(a.ok());
  std::vector<at::Tensor> resumed = make();
  auto b = AdamW::Create(resumed, options);
  ASSERT_TRUE(b.ok());
  for (int s = 0; s < 5; ++s) {
    SetGrads(straight, s);
    ASSERT_TRUE(a->Step(1e-2).ok());
    if (s < 3) {
      SetGrads(resumed, s);
      ASSERT_TRUE(b->Step(1e-2).ok());
    }
  }
  SafetensorsWriter writer;
  ASSERT_TRUE(b->Save(writer).ok());
  auto file = SafetensorsFile::Parse(writer.Serialize(), "ckpt");
  ASSERT_TRUE(file.ok()) << file.status();
  // A fresh optimizer over the resumed parameters, as after a restart.
  auto c = AdamW::Create(resumed, options);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(c->Load(**file).ok());
  EXPECT_EQ(c->step(), 3);
  for (int s = 3; s < 5; ++s) {
    SetGrads(resumed, s);
    ASSERT_TRUE(c->Step(1e-2).ok());
  }
  EXPECT_EQ(c->step(), 5);
  for (size_t i = 0; i < straight.size(); ++i) {
    EXPECT_TRUE(at::equal(straight[i], resumed[i])) << "parameter " << i;
  }
}

TEST(AdamWTest, LoadRejectsStateOfAnotherModel) {
  auto checkpoint = [](std::vector<at::Tensor> params) {
    SafetensorsWriter writer;
    auto opt = AdamW::Create(std::move(params), {});
    EXPECT_TRUE(opt.ok() && opt->Save(writer).ok());
    return writer;
  };
  struct Case {
    const char* name;
    SafetensorsWriter writer;
    const char* message;
  };
  std::vector<Case> cases;
  cases.push_back({"fewer parameters", checkpoint({at::zeros({2, 3})}),
                   "state for 1 parameters, this model trains 2"});
  cases.push_back({"other shape", checkpoint({at::zeros({2, 3}), at::zeros({4})}),
                   "optimizer.exp_avg.1 is [4] Float, the parameter is [5] Float"});
  {
    SafetensorsWriter w;
    EXPECT_TRUE(AddTensor(w, "optimizer.exp_avg.0", at::zeros({2, 3})).ok());
    EXPECT_TRUE(AddTensor(w, "optimizer.exp_avg.1", at::zeros({5})).ok());
    EXPECT_TRUE(AddTensor(w, "optimizer.exp_avg_sq.0", at::zeros({2, 3})).ok());
    EXPECT_TRUE(AddTensor(w, "optimizer.exp_avg_sq.1", at::zeros({5})).ok());
    cases.push_back({"no step", std::move(w), "optimizer.step is missing"});
  }
  {
    SafetensorsWriter w;
    EXPECT_TRUE(AddTensor(w, "optimizer.step", at::scalar_tensor(3, at::kLong)).ok());
    EXPECT_TRUE(AddTensor(w, "optimizer.exp_avg.0", at::zeros({2, 3})).ok());
    EXPECT_TRUE(AddTensor(w, "optimizer.exp_avg.1", at::zeros({5})).ok());
    EXPECT_TRUE(AddTensor(w, "optimizer.exp_avg_sq.0", at::zeros({2, 3})).ok());
    cases.push_back({"missing exp_avg_sq", std::move(w), "optimizer.exp_avg_sq.1"});
  }
  for (Case& c : cases) {
    SCOPED_TRACE(c.name);
    at::Tensor p0 = Param(at::ones({2, 3}), at::ones({2, 3}));
    at::Tensor p1 = Param(at::ones({5}), at::ones({5}));
    auto opt = AdamW::Create({p0, p1}, {});
    ASSERT_TRUE(opt.ok());
    ASSERT_TRUE(opt->Step(1e-3).ok());
    auto file = SafetensorsFile::Parse(c.writer.Serialize(), "ckpt-7/optimizer.safetensors");
    ASSERT_TRUE(file.ok()) << file.status();
    absl::Status s = opt->Load(**file);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_CONTAINS(s.message(), "optimizer state in ckpt-7/optimizer.safetensors");
    EXPECT_CONTAINS(s.message(), c.message);
    EXPECT_EQ(opt->step(), 1);  // unchanged
  }
}

TEST(ClipGradNormTest, ByHand) {
  const double inf = std::numeric_limits<double>::infinity();
  struct Case {
    const char* name;
    std::vector<float> g0, g1;  // two parameters' gradients; empty g1 = no gradient
    double max_norm;
    double norm;
    std::vector<float> clipped0;
  };
  const Case cases[] = {
      {"clipped to 1", {3}, {4}, 1.0, 5.0, {static_cast<float>(3 / (5 + 1e-6))}},
      {"under the limit", {3}, {4}, 10.0, 5.0, {3}},
      {"disabled", {3}, {4}, 0.0, 5.0, {3}},
      {"skips a missing grad", {0, 3, 4}, {}, 2.5, 5.0, {0, static_cast<float>(1.5 * 5 / (5 + 1e-6)),
                                                          static_cast<float>(2 * 5 / (5 + 1e-6))}},
      {"inf is reported, not applied", {3, static_cast<float>(inf)}, {4}, 1.0, inf,
       {3, static_cast<float>(inf)}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    at::Tensor p0 = Param(at::zeros({static_cast<int64_t>(c.g0.size())}), Floats(c.g0));
    at::Tensor p1 = Param(at::zeros({1}), c.g1.empty() ? at::Tensor() : Floats(c.g1));
    auto norm = ClipGradNorm({p0, p1}, c.max_norm);
    ASSERT_TRUE(norm.ok()) << norm.status();
    EXPECT_FLOAT_EQ(*norm, c.norm);
    EXPECT_TRUE(at::allclose(p0.grad(), Floats(c.clipped0), 1e-6, 0)) << p0.grad();
  }
  auto nan = ClipGradNorm({Param(at::zeros({1}), Floats({std::nanf("")}))}, 1.0);
  ASSERT_TRUE(nan.ok());
  EXPECT_TRUE(std::isnan(*nan));
  auto none = ClipGradNorm({Param(at::zeros({1}), at::Tensor())}, 1.0);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0.0);
}

// --- PyTorch as the reference --------------------------------------------------------------


std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  size_t begin = 0;
  while (begin <= s.size()) {
    size_t end = s.find(',', begin);
    if (end == std::string::npos) end = s.size();
    out.push_back(s.substr(begin, end - begin));
    begin = end + 1;
  }
  return out;
}

at::Tensor Get(const SafetensorsFile& f, const std::string& name) {
  auto t = ReadTensor(f, name);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : at::Tensor();
}

// One Python run per test binary (DESIGN.md §10): every comparison lives in this one test.
TEST(OptimizerReferenceTest, MatchesTorch) {
  const std::string out =
      herd::StrCat(::testing::TempDir(), "/herd_optimizer_ref_", ::getpid(), ".safetensors");
  auto output = herd::testing::RunPythonScript("tests/python/optimizer_reference.py", {"--part", "optimizer", "--out", out});
  ASSERT_TRUE(output.ok()) << output.status();
  auto opened = SafetensorsFile::Open(out);
  std::filesystem::remove(out);  // the mapping stays valid
  ASSERT_TRUE(opened.ok()) << opened.status();
  const SafetensorsFile& f = **opened;

  double worst = 0;
  int compared = 0;
  for (const std::string& c : Split(f.metadata().at("adam_cases"))) {
    SCOPED_TRACE(herd::StrCat("AdamW case ", c));
    const std::string prefix = herd::StrCat("adam.", c, ".");
    std::vector<at::Tensor> params;
    while (f.Find(herd::StrCat(prefix, "param.", params.size())) != nullptr) {
      params.push_back(Param(Get(f, herd::StrCat(prefix, "param.", params.size())), {}));
    }
    ASSERT_FALSE(params.empty());
    const at::Tensor lrs = Get(f, prefix + "lr");
    auto opt = AdamW::Create(params, {.weight_decay = Get(f, prefix + "weight_decay").item<double>()});
    ASSERT_TRUE(opt.ok()) << opt.status();
    for (int64_t s = 0; s < lrs.numel(); ++s) {
      for (size_t i = 0; i < params.size(); ++i) {
        params[i].mutable_grad() = Get(f, herd::StrCat(prefix, "grad.", s, ".", i));
      }
      ASSERT_TRUE(opt->Step(lrs[s].item<double>()).ok());
      for (size_t i = 0; i < params.size(); ++i) {
        const double err = RelativeError(params[i], Get(f, herd::StrCat(prefix, "after.", s, ".", i)));
        EXPECT_LT(err, 1e-6) << "step " << s << " parameter " << i;
        worst = std::max(worst, err);
        ++compared;
      }
    }
    SafetensorsWriter writer;
    ASSERT_TRUE(opt->Save(writer).ok());
    auto state = SafetensorsFile::Parse(writer.Serialize(), "state");
    ASSERT_TRUE(state.ok());
    for (size_t i = 0; i < params.size(); ++i) {
      for (const char* kind : {"exp_avg.", "exp_avg_sq."}) {
        const double err = RelativeError(Get(**state, herd::StrCat("optimizer.", kind, i)),
                                         Get(f, herd::StrCat(prefix, kind, i)));
        EXPECT_LT(err, 1e-6) << kind << i;
        worst = std::max(worst, err);
        ++compared;
      }
    }
  }

  for (const std::string& c : Split(f.metadata().at("clip_cases"))) {
    SCOPED_TRACE(herd::StrCat("clip case ", c));
    const std::string prefix = herd::StrCat("clip.", c, ".");
    std::vector<at::Tensor> params;
    for (size_t i = 0; f.Find(herd::StrCat(prefix, "param.", i)) != nullptr; ++i) {
      const std::string grad = herd::StrCat(prefix, "grad.", i);
      params.push_back(Param(Get(f, herd::StrCat(prefix, "param.", i)),
                             f.Find(grad) != nullptr ? Get(f, grad) : at::Tensor()));
    }
    auto norm = ClipGradNorm(params, Get(f, prefix + "max_norm").item<double>());
    ASSERT_TRUE(norm.ok()) << norm.status();
    const double expected = Get(f, prefix + "norm").item<double>();
    if (std::isfinite(expected)) {
      EXPECT_LT(std::abs(*norm - expected) / expected, 1e-6) << *norm << " vs " << expected;
    } else {
      EXPECT_EQ(*norm, expected);
    }
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string name = herd::StrCat(prefix, "clipped.", i);
      if (f.Find(name) == nullptr) {
        EXPECT_FALSE(params[i].grad().defined());
        continue;
      }
      const at::Tensor ref = Get(f, name);
      if (!std::isfinite(expected)) {
        EXPECT_TRUE(at::equal(params[i].grad(), ref)) << "parameter " << i << " was scaled";
        continue;
      }
      const double err = RelativeError(params[i].grad(), ref);
      EXPECT_LT(err, 1e-6) << "parameter " << i;
      worst = std::max(worst, err);
      ++compared;
    }
  }
  // 2 cases x 5 parameters x (5 steps + 2 state tensors) for AdamW, 3 finite clip cases.
  EXPECT_GE(compared, 2 * 5 * 7 + 3);
  std::printf("%d tensors compared, largest relative difference from torch: %g\n", compared,
              worst);
}

}  // namespace
}  // namespace herd::engine
