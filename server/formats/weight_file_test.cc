#include "server/formats/weight_file.h"

#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/formats/internal/byte_reader.h"
#include "server/formats/internal/pickle.h"
#include "server/formats/internal/pickle_writer.h"
#include "server/formats/internal/weight_loader.h"
#include "server/formats/zip.h"

namespace i2s {
namespace {

using internal::PickleWriter;

// gtest only (no gmock in this build): substring checks with the text in the failure.
::testing::AssertionResult HasText(absl::string_view haystack, absl::string_view needle) {
  if (haystack.find(needle) != absl::string_view::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << haystack << "' lacks '" << needle << "'";
}

// ---- Building test files by hand, opcode by opcode --------------------------------

std::string FloatBytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

std::string Int64(uint64_t v) {
  std::string out;
  internal::AppendLE(&out, v, 8);
  return out;
}

// The bytes torch.storage._load_from_bytes reads: a complete legacy torch.save stream of
// one float storage (header, the storage by persistent ID, the key list, count + data).
std::string StorageStream(const std::string& key, const std::vector<float>& data) {
  PickleWriter p;
  p.Raw(internal::LegacyTorchHeader());
  p.Proto().Mark().Str("storage").Global("torch", "FloatStorage").Str(key).Str("cpu");
  p.Int(static_cast<int64_t>(data.size())).None().Tuple().BinPersId().Stop();
  p.Proto().EmptyList().Mark().Str(key).Appends().Stop();
  p.Raw(Int64(data.size())).Raw(FloatBytes(data));
  return p.Take();
}

// _rebuild_tensor_v2(<storage pushed by `storage`>, offset, size, stride, False, OrderedDict())
void RebuildTensor(PickleWriter& p, const std::function<void()>& storage, int64_t offset,
                   const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) {
  p.StackGlobal("torch._utils", "_rebuild_tensor_v2").Mark();
  storage();
  p.Int(offset).IntTuple(sizes).IntTuple(strides).Bool(false).EmptyOrderedDict().Tuple().Reduce();
}

std::vector<int64_t> Contiguous(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> strides(sizes.size(), 1);
  for (size_t d = sizes.size(); d-- > 1;) strides[d - 1] = strides[d] * sizes[d];
  return strides;
}

// A tensor the way pickle.dumps writes one: its storage a _load_from_bytes stream.
void PickledTensor(PickleWriter& p, const std::string& key, const std::vector<float>& data,
                   const std::vector<int64_t>& sizes, bool parameter = false) {
  if (parameter) p.StackGlobal("torch._utils", "_rebuild_parameter");
  RebuildTensor(
      p,
      [&] {
        p.StackGlobal("torch.storage", "_load_from_bytes").Bytes(StorageStream(key, data));
        p.Tuple1().Reduce();
      },
      0, sizes, Contiguous(sizes));
  if (parameter) p.Bool(true).EmptyOrderedDict().Tuple3().Reduce();
}

// A torch.save file (zip or legacy) whose pickle the test writes through p(); tensors'
// storages are persistent IDs resolved from the archive or the legacy tail.
class TorchSave {
 public:
  explicit TorchSave(bool legacy) : legacy_(legacy) { p_.Proto(2); }
  PickleWriter& p() { return p_; }

  // Pushes a tensor on storage `key` (new data, or the existing storage if `data` is empty).
  void Tensor(const std::string& key, const std::vector<float>& data,
              const std::vector<int64_t>& sizes, int64_t offset = 0) {
    if (!data.empty()) storages_.emplace_back(key, data);
    int64_t numel = 0;
    for (const auto& [k, d] : storages_) {
      if (k == key) numel = static_cast<int64_t>(d.size());
    }
    RebuildTensor(
        p_,
        [&] {
          p_.Mark().Str("storage").Global("torch", "FloatStorage").Str(key).Str("cpu").Int(numel);
          if (legacy_) p_.None();
          p_.Tuple().BinPersId();
        },
        offset, sizes, Contiguous(sizes));
  }

  std::string Finish() {
    p_.Stop();
    std::string pickle = p_.Take();
    if (legacy_) {
      PickleWriter out;
      out.Raw(internal::LegacyTorchHeader()).Raw(pickle);
      out.Proto().EmptyList().Mark();
      for (const auto& [key, data] : storages_) out.Str(key);
      out.Appends().Stop();
      for (const auto& [key, data] : storages_) out.Raw(Int64(data.size())).Raw(FloatBytes(data));
      return out.Take();
    }
    ZipWriter zip;
    EXPECT_TRUE(zip.Add("archive/data.pkl", pickle).ok());
    for (const auto& [key, data] : storages_) {
      EXPECT_TRUE(zip.Add("archive/data/" + key, FloatBytes(data)).ok());
    }
    EXPECT_TRUE(zip.Add("archive/version", "3\n").ok());
    return zip.Finish();
  }

 private:
  bool legacy_;
  PickleWriter p_;
  std::vector<std::pair<std::string, std::vector<float>>> storages_;
};

// ---- Reading results ---------------------------------------------------------------

absl::StatusOr<WeightFileContents> Parse(const std::string& bytes) {
  return ParseWeightFile(std::make_shared<const std::string>(bytes));
}

std::map<std::string, std::string> ToMap(
    const std::vector<std::pair<std::string, std::string>>& v) {
  return std::map<std::string, std::string>(v.begin(), v.end());
}

const RawTensor* FindTensor(const WeightFileContents& c, const std::string& name) {
  for (const auto& [n, t] : c.tensors) {
    if (n == name) return &t;
  }
  return nullptr;
}

std::vector<std::string> TensorNames(const WeightFileContents& c) {
  std::vector<std::string> names;
  for (const auto& [n, t] : c.tensors) names.push_back(n);
  return names;
}

// The elements of a float32 tensor in C order, gathered through its strides.
std::vector<float> Floats(const RawTensor& t) {
  std::vector<float> out;
  const int64_t n = t.numel();
  for (int64_t flat = 0; flat < n; ++flat) {
    int64_t rest = flat, elem = t.offset;
    for (size_t d = t.sizes.size(); d-- > 0;) {
      elem += (rest % t.sizes[d]) * t.strides[d];
      rest /= t.sizes[d];
    }
    float f;
    std::memcpy(&f, t.storage.data() + elem * 4, 4);
    out.push_back(f);
  }
  return out;
}

// ---- rosinality checkpoints (torch.save, zip and legacy) ---------------------------

// train.py's checkpoint: {g_ema: state dict, latent_avg, g_optim: optimiser state,
// args: argparse.Namespace, ada_aug_p}, with `d` and the optimiser state as junk.
std::string RosinalityCheckpoint(bool legacy) {
  TorchSave s(legacy);
  PickleWriter& p = s.p();
  p.EmptyDict().BinPut(0).Mark();
  p.Str("g_ema").EmptyOrderedDict().Mark();
  p.Str("conv1.conv.weight");
  s.Tensor("0", {1, 2, 3, 4, 5, 6}, {1, 2, 3, 1, 1});
  p.Str("noises.noise_0");
  s.Tensor("1", std::vector<float>(16, 0.5f), {1, 1, 4, 4});
  p.SetItems();
  p.Str("d").EmptyOrderedDict().Mark().Str("convs.0.0.weight");
  s.Tensor("2", {9, 8}, {2});
  p.SetItems();
  p.Str("latent_avg");
  s.Tensor("3", {0.25f, -0.5f, 1, 2}, {4});
  // g_optim: {'state': {0: {'step': 10, 'exp_avg': T}}, 'param_groups': [{...}]}
  p.Str("g_optim").EmptyDict().Mark();
  p.Str("state").EmptyDict().Mark().Int(0).EmptyDict().Mark();
  p.Str("step").Int(10).Str("exp_avg");
  s.Tensor("4", {7, 7}, {2});
  p.SetItems().SetItems();
  p.Str("param_groups").EmptyList().Mark().EmptyDict().Mark();
  p.Str("lr").Float(0.002).Str("betas").Float(0.0).Float(0.99).Tuple2();
  p.Str("eps").Float(1e-8).Str("params").EmptyList().Int(0).Append();
  p.SetItems().Appends();
  p.SetItems();
  // args: argparse.Namespace, NEWOBJ + BUILD of its __dict__.
  p.Str("args").Global("argparse", "Namespace").EmptyTuple().NewObj();
  p.EmptyDict().Mark().Str("channel_multiplier").Int(2).Str("size").Int(256);
  p.Str("r1").Float(10.0).Str("augment").Bool(false).Str("path").Str("/data/lmdb");
  p.SetItems().Build();
  p.Str("ada_aug_p").Float(0.25);
  p.SetItems();
  return s.Finish();
}

class RosinalityTest : public ::testing::TestWithParam<bool> {};

TEST_P(RosinalityTest, ReadsTensorsValuesAndObjects) {
  auto c = Parse(RosinalityCheckpoint(GetParam()));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->format, GetParam() ? WeightFileFormat::kTorchLegacy : WeightFileFormat::kTorchZip);
  EXPECT_EQ(TensorNames(*c), (std::vector<std::string>{"g_ema.conv1.conv.weight",
                                                       "g_ema.noises.noise_0", "d.convs.0.0.weight",
                                                       "latent_avg", "g_optim.state.0.exp_avg"}));
  const RawTensor* w = FindTensor(*c, "g_ema.conv1.conv.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, DType::kFloat32);
  EXPECT_EQ(w->sizes, (std::vector<int64_t>{1, 2, 3, 1, 1}));
  EXPECT_EQ(Floats(*w), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(Floats(*FindTensor(*c, "latent_avg")), (std::vector<float>{0.25f, -0.5f, 1, 2}));
  EXPECT_TRUE(c->decoded.empty());

  auto values = ToMap(c->values);
  EXPECT_EQ(values["args.channel_multiplier"], "2");
  EXPECT_EQ(values["args.size"], "256");
  EXPECT_EQ(values["args.r1"], "10");
  EXPECT_EQ(values["args.augment"], "False");
  EXPECT_EQ(values["args.path"], "/data/lmdb");
  EXPECT_EQ(values["ada_aug_p"], "0.25");
  EXPECT_EQ(values["g_optim.state.0.step"], "10");
  EXPECT_EQ(values["g_optim.param_groups.0.lr"], "0.002");
  EXPECT_EQ(values["g_optim.param_groups.0.betas.1"], "0.99");
  EXPECT_EQ(values["g_optim.param_groups.0.eps"], "1e-08");
  EXPECT_EQ(values["g_optim.param_groups.0.params.0"], "0");
  EXPECT_EQ(ToMap(c->objects),
            (std::map<std::string, std::string>{{"args", "argparse.Namespace"}}));
}

// The state-dict reader keeps its contract: a nested checkpoint is not a flat state dict.
TEST_P(RosinalityTest, TorchStateDictStillWantsAFlatDict) {
  auto sd =
      ParseTorchStateDict(std::make_shared<const std::string>(RosinalityCheckpoint(GetParam())));
  ASSERT_FALSE(sd.ok());
  EXPECT_TRUE(HasText(sd.status().message(), "entry 'g_ema' is a dict, not a tensor"));
}

TEST_P(RosinalityTest, EveryTruncationIsAnError) {
  const std::string bytes = RosinalityCheckpoint(GetParam());
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(Parse(bytes.substr(0, n)).ok()) << "prefix of " << n << " bytes";
  }
}

INSTANTIATE_TEST_SUITE_P(Containers, RosinalityTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "legacy" : "zip"; });

TEST(WeightFileTest, BareStateDictMatchesTorchStateDict) {
  std::vector<float> a{1, 2, 3, 4, 5, 6}, b{-1.5f};
  for (TorchFileFormat format : {TorchFileFormat::kZip, TorchFileFormat::kLegacy}) {
    auto bytes = SerializeTorchStateDict(
        {{"layer.weight", {2, 3}, a.data()}, {"layer.bias", {1}, b.data()}}, format);
    ASSERT_TRUE(bytes.ok());
    auto c = Parse(*bytes);
    ASSERT_TRUE(c.ok()) << c.status();
    auto sd = ParseTorchStateDict(std::make_shared<const std::string>(*bytes));
    ASSERT_TRUE(sd.ok()) << sd.status();
    ASSERT_EQ(c->tensors.size(), sd->tensors.size());
    for (size_t k = 0; k < c->tensors.size(); ++k) {
      EXPECT_EQ(c->tensors[k].first, sd->tensors[k].first);
      EXPECT_EQ(Floats(c->tensors[k].second), Floats(sd->tensors[k].second));
    }
    EXPECT_TRUE(c->values.empty());
    EXPECT_TRUE(c->objects.empty());
  }
}

// ---- NVIDIA network pickles ---------------------------------------------------------

// _reconstruct_persistent_obj({type, version, module_src, class_name, state}).
void Persistent(PickleWriter& p, const std::string& class_name,
                const std::function<void()>& state) {
  p.StackGlobal("torch_utils.persistence", "_reconstruct_persistent_obj");
  p.EmptyDict().Memoize().Mark();
  p.Str("type").Str("class").Str("version").Int(6);
  p.Str("module_src").Str("import os\nos.system('echo pwned')\nclass Generator: pass\n");
  p.Str("class_name").Str(class_name).Str("state");
  state();
  p.SetItems().Tuple1().Reduce().Memoize();
}

// A module's __dict__: training, _parameters, _buffers, _modules, then `extra`.
void ModuleState(
    PickleWriter& p, const std::function<void()>& parameters, const std::function<void()>& buffers,
    const std::function<void()>& modules, const std::function<void()>& extra = [] {}) {
  p.EmptyDict().Memoize().Mark();
  p.Str("training").Bool(false);
  p.Str("_parameters").EmptyOrderedDict().Mark();
  parameters();
  p.SetItems();
  p.Str("_buffers").EmptyOrderedDict().Mark();
  buffers();
  p.SetItems();
  p.Str("_non_persistent_buffers_set").EmptySet();
  p.Str("_modules").EmptyOrderedDict().Mark();
  modules();
  p.SetItems();
  extra();
  p.SetItems();
}

// dict(G=..., D=..., G_ema=..., training_set_kwargs=..., augment_pipe=None), protocol 4.
std::string NvidiaPickle() {
  PickleWriter p;
  p.Proto(4).EmptyDict().Memoize().Mark();
  p.Str("D");
  Persistent(p, "Discriminator", [&] {
    ModuleState(
        p, [] {}, [] {},
        [&] {
          p.Str("b4");
          // A submodule that is not persistent: a plain NEWOBJ + BUILD instance.
          p.StackGlobal("training.networks", "DiscriminatorEpilogue").EmptyTuple().NewObj();
          ModuleState(
              p,
              [&] {
                p.Str("out");
                PickledTensor(p, "d0", {3, 4}, {2}, /*parameter=*/true);
              },
              [] {}, [] {});
          p.Build();
        });
  });
  p.Str("G_ema");
  Persistent(p, "Generator", [&] {
    ModuleState(
        p, [] {}, [] {},
        [&] {
          p.Str("mapping");
          Persistent(p, "MappingNetwork", [&] {
            ModuleState(
                p, [] {},
                [&] {
                  p.Str("w_avg");
                  PickledTensor(p, "m0", {0.5f, 1.5f, 2.5f, 3.5f}, {4});
                },
                [] {}, [&] { p.Str("w_dim").Int(4).Str("num_ws").Int(18); });
          });
          p.Str("synthesis");
          Persistent(p, "SynthesisNetwork", [&] {
            ModuleState(
                p, [] {}, [] {},
                [&] {
                  p.Str("b4");
                  Persistent(p, "SynthesisBlock", [&] {
                    ModuleState(
                        p,
                        [&] {
                          p.Str("const");
                          PickledTensor(p, "s0", {1, 2, 3, 4}, {1, 2, 2}, /*parameter=*/true);
                        },
                        [] {}, [] {},
                        [&] { p.Str("resolution").Int(4).Str("architecture").Str("skip"); });
                  });
                });
          });
        },
        [&] {
          // _init_kwargs: an EasyDict (NEWOBJ + SETITEMS) holding a nested EasyDict.
          p.Str("_init_kwargs").StackGlobal("dnnlib.util", "EasyDict").EmptyTuple().NewObj();
          p.Mark().Str("z_dim").Int(512).Str("w_dim").Int(4);
          p.Str("synthesis_kwargs").StackGlobal("dnnlib.util", "EasyDict").EmptyTuple().NewObj();
          p.Mark().Str("channel_base").Int(32768).Str("conv_clamp").Int(256).SetItems();
          p.Str("mapping_kwargs").EmptyDict().SetItems();
          p.Str("img_resolution").Int(1024);
          // gain: numpy.core.multiarray.scalar(numpy.dtype('f4') + BUILD, b'<4 bytes>')
          p.Str("gain").StackGlobal("numpy.core.multiarray", "scalar");
          p.StackGlobal("numpy", "dtype").Str("f4").Bool(false).Bool(true).Tuple3().Reduce();
          p.Mark().Int(3).Str("<").None().None().None().Int(-1).Int(-1).Int(0).Tuple().Build();
          float gain = 0.1f;
          p.Bytes(std::string(reinterpret_cast<const char*>(&gain), 4)).Tuple2().Reduce();
        });
  });
  // EasyDict built the other way: REDUCE of the class with a dict.
  p.Str("training_set_kwargs").StackGlobal("dnnlib", "EasyDict").EmptyDict().Mark();
  p.Str("path").Str("ffhq.zip").Str("xflip").Bool(false).Str("max_size").None().SetItems();
  p.Tuple1().Reduce();
  p.Str("augment_pipe").None();
  p.SetItems().Stop();
  return p.Take();
}

TEST(WeightFileTest, NvidiaPersistentObjects) {
  auto c = Parse(NvidiaPickle());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->format, WeightFileFormat::kPickle);
  EXPECT_EQ(TensorNames(*c), (std::vector<std::string>{"D.b4.out", "G_ema.mapping.w_avg",
                                                       "G_ema.synthesis.b4.const"}));
  const RawTensor* k = FindTensor(*c, "G_ema.synthesis.b4.const");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->sizes, (std::vector<int64_t>{1, 2, 2}));
  EXPECT_EQ(k->strides, (std::vector<int64_t>{4, 2, 1}));
  EXPECT_EQ(Floats(*k), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(Floats(*FindTensor(*c, "G_ema.mapping.w_avg")),
            (std::vector<float>{0.5f, 1.5f, 2.5f, 3.5f}));
  // The storages stay inside the file: nothing was copied.
  const char* begin = c->file->data();
  EXPECT_GE(k->storage.data(), begin);
  EXPECT_LE(k->storage.data() + k->storage.size(), begin + c->file->size());

  auto values = ToMap(c->values);
  EXPECT_EQ(values["G_ema._init_kwargs.synthesis_kwargs.conv_clamp"], "256");
  EXPECT_EQ(values["G_ema._init_kwargs.synthesis_kwargs.channel_base"], "32768");
  EXPECT_EQ(values["G_ema._init_kwargs.z_dim"], "512");
  EXPECT_EQ(values["G_ema.img_resolution"], "1024");
  EXPECT_EQ(values["G_ema.gain"], "0.1");  // a float32 numpy scalar, shortest text
  EXPECT_EQ(values["G_ema.training"], "False");
  EXPECT_EQ(values["G_ema.mapping.w_dim"], "4");
  EXPECT_EQ(values["G_ema.synthesis.b4.architecture"], "skip");
  EXPECT_EQ(values["training_set_kwargs.path"], "ffhq.zip");
  EXPECT_EQ(values["training_set_kwargs.max_size"], "None");
  EXPECT_EQ(values["augment_pipe"], "None");
  for (const auto& [name, value] : c->values) {
    EXPECT_FALSE(HasText(value, "os.system")) << name;
    EXPECT_FALSE(HasText(name, "module_src"));
    EXPECT_FALSE(HasText(name, "_parameters"));
  }
  EXPECT_EQ(ToMap(c->objects),
            (std::map<std::string, std::string>{{"D", "Discriminator"},
                                                {"D.b4", "training.networks.DiscriminatorEpilogue"},
                                                {"G_ema", "Generator"},
                                                {"G_ema.mapping", "MappingNetwork"},
                                                {"G_ema.synthesis", "SynthesisNetwork"},
                                                {"G_ema.synthesis.b4", "SynthesisBlock"}}));
}

TEST(WeightFileTest, NvidiaPickleEveryTruncationIsAnError) {
  const std::string bytes = NvidiaPickle();
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(Parse(bytes.substr(0, n)).ok()) << "prefix of " << n << " bytes";
  }
}

// Single-byte corruption anywhere must give a status, never a crash; tensors that still
// parse lie inside their storage.
TEST(WeightFileTest, NvidiaPickleByteFlipsNeverCrash) {
  const std::string bytes = NvidiaPickle();
  int errors = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      std::string copy = bytes;
      copy[i] = static_cast<char>(copy[i] ^ mask);
      auto c = Parse(copy);
      if (!c.ok()) {
        ++errors;
        EXPECT_FALSE(c.status().message().empty());
        continue;
      }
      for (const auto& [name, t] : c->tensors) {
        int64_t last = t.offset;
        for (size_t d = 0; d < t.sizes.size(); ++d) last += (t.sizes[d] - 1) * t.strides[d];
        if (t.numel() > 0) {
          EXPECT_LE((last + 1) * DTypeSize(t.dtype), static_cast<int64_t>(t.storage.size()));
        }
      }
    }
  }
  EXPECT_GT(errors, 0);
}

// ---- numpy ------------------------------------------------------------------------

void NumpyDType(PickleWriter& p, const std::string& code, const std::string& order = "<") {
  p.Global("numpy", "dtype").Str(code).Bool(false).Bool(true).Tuple3().Reduce();
  p.Mark().Int(3).Str(order).None().None().None().Int(-1).Int(-1).Int(0).Tuple().Build();
}

// numpy.core.multiarray._reconstruct(ndarray, (0,), b'b') + BUILD(1, shape, dtype, fortran, data)
void NumpyArray(PickleWriter& p, const std::vector<int64_t>& shape, const std::string& code,
                bool fortran, const std::function<void()>& data, const std::string& order = "<") {
  p.Global("numpy.core.multiarray", "_reconstruct").Global("numpy", "ndarray");
  p.Int(0).Tuple1().Bytes("b").Tuple3().Reduce();
  p.Mark().Int(1).IntTuple(shape);
  NumpyDType(p, code, order);
  p.Bool(fortran);
  data();
  p.Tuple().Build();
}

std::string Latin1Utf8(absl::string_view bytes) {  // str.decode('latin1') as UTF-8
  std::string out;
  for (char ch : bytes) {
    uint8_t c = static_cast<uint8_t>(ch);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back(static_cast<char>(0xc0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
    }
  }
  return out;
}

TEST(WeightFileTest, NumpyScalarsAndArrays) {
  PickleWriter p;
  p.Proto(2).EmptyDict().Mark();
  auto scalar = [&](const std::string& name, const std::string& code, std::string raw) {
    p.Str(name).Global("numpy.core.multiarray", "scalar");
    NumpyDType(p, code);
    p.Bytes(raw).Tuple2().Reduce();
  };
  double half = 0.5;
  float tenth = 0.1f;
  int64_t minus3 = -3;
  scalar("f8", "f8", std::string(reinterpret_cast<const char*>(&half), 8));
  scalar("f4", "f4", std::string(reinterpret_cast<const char*>(&tenth), 4));
  scalar("i8", "i8", std::string(reinterpret_cast<const char*>(&minus3), 8));
  scalar("b1", "b1", std::string(1, '\x01'));
  scalar("f2", "f2", std::string("\x00\x3e", 2));  // 1.5 in IEEE half
  // numpy 2 spells the module numpy._core.
  p.Str("np2").Global("numpy._core.multiarray", "scalar");
  NumpyDType(p, "i4");
  p.Bytes(std::string("\x07\x00\x00\x00", 4)).Tuple2().Reduce();

  std::vector<float> six{0, 1, 2, 3, 4, 5};
  p.Str("c_order");
  NumpyArray(p, {2, 3}, "f4", false, [&] { p.Bytes(FloatBytes(six)); });
  p.Str("f_order");
  NumpyArray(p, {2, 3}, "f4", true, [&] { p.Bytes(FloatBytes(six)); });
  // Protocol 2's bytes: _codecs.encode(<latin-1 text>, 'latin1'), decoded into a copy.
  p.Str("latin1");
  NumpyArray(p, {3}, "f4", false, [&] {
    p.Global("_codecs", "encode").Str(Latin1Utf8(FloatBytes({-1, 0.5f, 2}))).Str("latin1");
    p.Tuple2().Reduce();
  });
  // Protocol 5's in-band form: _frombuffer(bytearray, dtype, shape, order).
  p.Str("frombuffer").Global("numpy.core.numeric", "_frombuffer").Mark();
  p.ByteArray8(std::string("\x01\x00\x02\x00", 4));
  NumpyDType(p, "i2");
  p.IntTuple({2}).Str("C").Tuple().Reduce();
  // Dtypes that are not tensors here: objects, not errors.
  p.Str("uint32");
  NumpyArray(p, {1}, "u4", false, [&] { p.Bytes(std::string(4, '\0')); });
  p.Str("big_endian");
  NumpyArray(
      p, {1}, "f4", false, [&] { p.Bytes(std::string(4, '\0')); }, ">");
  p.SetItems().Stop();

  auto c = Parse(p.Take());
  ASSERT_TRUE(c.ok()) << c.status();
  auto values = ToMap(c->values);
  EXPECT_EQ(values["f8"], "0.5");
  EXPECT_EQ(values["f4"], "0.1");
  EXPECT_EQ(values["i8"], "-3");
  EXPECT_EQ(values["b1"], "True");
  EXPECT_EQ(values["f2"], "1.5");
  EXPECT_EQ(values["np2"], "7");
  EXPECT_EQ(TensorNames(*c),
            (std::vector<std::string>{"c_order", "f_order", "latin1", "frombuffer"}));
  const RawTensor* cm = FindTensor(*c, "c_order");
  EXPECT_EQ(cm->strides, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(Floats(*cm), six);
  const RawTensor* fm = FindTensor(*c, "f_order");
  EXPECT_EQ(fm->strides, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(Floats(*fm), (std::vector<float>{0, 2, 4, 1, 3, 5}));
  const RawTensor* fb = FindTensor(*c, "frombuffer");
  EXPECT_EQ(fb->dtype, DType::kInt16);
  EXPECT_EQ(fb->sizes, (std::vector<int64_t>{2}));
  EXPECT_EQ(ToMap(c->objects), (std::map<std::string, std::string>{{"big_endian", "numpy.ndarray"},
                                                                   {"uint32", "numpy.ndarray"}}));
  // The decoded copy outlives the parse, owned by the result.
  ASSERT_EQ(c->decoded.size(), 1u);
  WeightFileContents moved = *std::move(c);
  EXPECT_EQ(Floats(*FindTensor(moved, "latin1")), (std::vector<float>{-1, 0.5f, 2}));
}

TEST(WeightFileTest, NumpyArrayWithTooFewBytesIsAnError) {
  PickleWriter p;
  p.Proto(2);
  NumpyArray(p, {2, 3}, "f4", false, [&] { p.Bytes(std::string(20, '\0')); });
  p.Stop();
  auto c = Parse(p.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "6 f4 elements holds 20 bytes"));
}

// ---- Shared storages -------------------------------------------------------------

TEST(WeightFileTest, SharedStorageInAPickle) {
  PickleWriter p;
  p.Proto(4).EmptyDict().Mark();
  const std::string stream = StorageStream("k", {1, 2, 3, 4, 5});
  // a: the storage object memoised (as pickle does for one storage object).
  p.Str("a");
  RebuildTensor(
      p,
      [&] {
        p.Global("torch.storage", "_load_from_bytes").Bytes(stream).BinPut(7).Tuple1().Reduce();
        p.BinPut(8);
      },
      0, {2}, {1});
  p.Str("b");
  RebuildTensor(p, [&] { p.BinGet(8); }, 2, {3}, {1});
  // c: the same bytes object loaded again: parsed once, the same storage.
  p.Str("c");
  RebuildTensor(p,
                [&] { p.Global("torch.storage", "_load_from_bytes").BinGet(7).Tuple1().Reduce(); },
                4, {1}, {1});
  p.SetItems().Stop();
  auto c = Parse(p.Take());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->tensors.size(), 3u);
  EXPECT_EQ(Floats(c->tensors[0].second), (std::vector<float>{1, 2}));
  EXPECT_EQ(Floats(c->tensors[1].second), (std::vector<float>{3, 4, 5}));
  EXPECT_EQ(Floats(c->tensors[2].second), (std::vector<float>{5}));
  EXPECT_EQ(c->tensors[0].second.storage.data(), c->tensors[1].second.storage.data());
  EXPECT_EQ(c->tensors[0].second.storage.data(), c->tensors[2].second.storage.data());
}

TEST(WeightFileTest, SharedStorageInTorchSave) {
  for (bool legacy : {false, true}) {
    TorchSave s(legacy);
    s.p().EmptyDict().Mark().Str("whole");
    s.Tensor("0", {1, 2, 3, 4, 5, 6}, {2, 3});
    s.p().Str("row1");
    s.Tensor("0", {}, {3}, /*offset=*/3);
    s.p().SetItems();
    auto c = Parse(s.Finish());
    ASSERT_TRUE(c.ok()) << c.status();
    ASSERT_EQ(c->tensors.size(), 2u);
    EXPECT_EQ(c->tensors[0].second.storage.data(), c->tensors[1].second.storage.data());
    EXPECT_EQ(Floats(c->tensors[1].second), (std::vector<float>{4, 5, 6}));
  }
}

// ---- Objects of unknown classes --------------------------------------------------

TEST(WeightFileTest, UnknownClassesAreOpaqueDataStillWalked) {
  TorchSave s(/*legacy=*/false);
  PickleWriter& p = s.p();
  p.EmptyDict().Mark();
  // NEWOBJ + BUILD(__dict__)
  p.Str("newobj").Global("some.module", "Thing").EmptyTuple().NewObj();
  p.EmptyDict().Mark().Str("weight");
  s.Tensor("0", {1, 2}, {2});
  p.Str("n").Int(3).SetItems().Build();
  // NEWOBJ_EX(cls, args, kwargs) + BUILD((__dict__, slots))
  p.Str("newobj_ex").Global("some.module", "Slotted").EmptyTuple().EmptyDict().NewObjEx();
  p.EmptyDict().Mark().Str("a").Int(1).SetItems().EmptyDict().Mark().Str("b").Int(2).SetItems();
  p.Tuple2().Build();
  // copyreg._reconstructor(cls, object, None) + BUILD: protocols 0 and 1.
  p.Str("reconstructor").Global("copy_reg", "_reconstructor");
  p.Global("some.module", "Old").Global("__builtin__", "object").None().Tuple3().Reduce();
  p.EmptyDict().Mark().Str("x").Float(1.5).SetItems().Build();
  // Subclasses of dict and list: their items come by SETITEMS and APPENDS.
  p.Str("dict_subclass").Global("some.module", "Config").EmptyTuple().NewObj();
  p.Mark().Str("key").Str("value").SetItems();
  p.Str("list_subclass").Global("some.module", "Layers").EmptyTuple().NewObj();
  p.Mark().Int(5).Int(6).Appends();
  // A set, and a class named as a value (not a leaf: left out).
  p.Str("set").EmptySet().Mark().Int(9).AddItems();
  p.Str("factory").Global("builtins", "list");
  p.SetItems();
  auto c = Parse(s.Finish());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(TensorNames(*c), (std::vector<std::string>{"newobj.weight"}));
  auto values = ToMap(c->values);
  EXPECT_EQ(values, (std::map<std::string, std::string>{{"newobj.n", "3"},
                                                        {"newobj_ex.a", "1"},
                                                        {"newobj_ex.b", "2"},
                                                        {"reconstructor.x", "1.5"},
                                                        {"dict_subclass.key", "value"},
                                                        {"list_subclass.0", "5"},
                                                        {"list_subclass.1", "6"},
                                                        {"set.0", "9"}}));
  EXPECT_EQ(ToMap(c->objects),
            (std::map<std::string, std::string>{{"newobj", "some.module.Thing"},
                                                {"newobj_ex", "some.module.Slotted"},
                                                {"reconstructor", "some.module.Old"},
                                                {"dict_subclass", "some.module.Config"},
                                                {"list_subclass", "some.module.Layers"}}));
}

TEST(WeightFileTest, TensorFlowNetworkObjects) {
  // The original StyleGAN2 pkls: (G, D, Gs) of dnnlib.tflib.network.Network, each
  // NEWOBJ + BUILD of {version, name, static_kwargs, build_module_src, variables}.
  PickleWriter p;
  p.Proto(3).Global("dnnlib.tflib.network", "Network").EmptyTuple().NewObj();
  p.EmptyDict().Mark().Str("version").Int(4).Str("name").Str("G_synthesis");
  p.Str("build_module_src").Str("def G_synthesis(): import os; os.system('x')");
  p.Str("static_kwargs").Global("dnnlib.util", "EasyDict").EmptyTuple().NewObj();
  p.Mark().Str("resolution").Int(1024).SetItems();
  p.Str("variables").EmptyList().Mark();
  p.Str("G_synthesis/4x4/Const/const");
  NumpyArray(p, {1, 2}, "f4", false, [&] { p.Bytes(FloatBytes({3, 4})); });
  p.Tuple2().Appends();
  p.SetItems().Build().Stop();
  auto c = Parse(p.Take());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(TensorNames(*c), (std::vector<std::string>{"variables.0.1"}));
  auto values = ToMap(c->values);
  EXPECT_EQ(values["variables.0.0"], "G_synthesis/4x4/Const/const");
  EXPECT_EQ(values["static_kwargs.resolution"], "1024");
  EXPECT_EQ(values.count("build_module_src"), 0u);
  EXPECT_EQ(ToMap(c->objects),
            (std::map<std::string, std::string>{{"", "dnnlib.tflib.network.Network"}}));
}

// ---- Refusals ----------------------------------------------------------------------

// A plain pickle {'x': module.name('echo pwned')}.
std::string PlainCall(const std::string& module, const std::string& name) {
  PickleWriter p;
  p.Proto(2).EmptyDict().Str("x").Global(module, name).Str("echo pwned").Tuple1().Reduce();
  p.SetItem().Stop();
  return p.Take();
}

TEST(WeightFileTest, RefusesCallsOutsideTheAllowListNamingThem) {
  const std::vector<std::pair<std::string, std::string>> kCalls = {{"os", "system"},
                                                                   {"posix", "system"},
                                                                   {"builtins", "eval"},
                                                                   {"builtins", "exec"},
                                                                   {"builtins", "getattr"},
                                                                   {"subprocess", "Popen"},
                                                                   {"subprocess", "check_output"},
                                                                   {"argparse", "Namespace"},
                                                                   {"torch", "load"},
                                                                   {"numpy", "load"},
                                                                   {"torch.jit", "load"},
                                                                   {"anything.at", "all"}};
  for (const auto& [module, name] : kCalls) {
    const std::string callable = absl::StrCat(module, ".", name);
    auto c = Parse(PlainCall(module, name));
    ASSERT_FALSE(c.ok()) << callable;
    EXPECT_TRUE(HasText(c.status().message(), "unsupported object '" + callable + "'"));
    // Inside a torch.save file too.
    TorchSave s(/*legacy=*/true);
    s.p().EmptyDict().Str("x").Global(module, name).Str("echo pwned").Tuple1().Reduce();
    s.p().SetItem();
    auto t = Parse(s.Finish());
    ASSERT_FALSE(t.ok()) << callable;
    EXPECT_TRUE(HasText(t.status().message(), "'" + callable + "'"));
  }
  // Python 2's spelling is reported as Python 3's.
  auto c = Parse(PlainCall("__builtin__", "eval"));
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "'builtins.eval'"));
}

TEST(WeightFileTest, RefusesObjInstAndIndirectCalls) {
  // OBJ: MARK cls args OBJ.
  PickleWriter obj;
  obj.Proto(2).Mark().Global("os", "system").Str("echo pwned").Raw("o").Stop();
  auto c = Parse(obj.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "'os.system'"));
  // INST: MARK args INST module\nname\n.
  PickleWriter inst;
  inst.Proto(2).Mark().Str("echo pwned").Raw("ios\nsystem\n").Stop();
  c = Parse(inst.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "'os.system'"));
  // A tensor-subclass rebuilder asked to call something else.
  PickleWriter sub;
  sub.Proto(2).Global("torch._tensor", "_rebuild_from_type_v2").Mark().Global("os", "system");
  sub.Global("torch", "Tensor").Str("echo pwned").Tuple1().EmptyDict().Tuple().Reduce().Stop();
  c = Parse(sub.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "'os.system'"));
  // copyreg.__newobj__ makes an instance: fine; but extension codes are refused.
  PickleWriter ext;
  ext.Proto(2).Raw("\x82\x01").Stop();
  c = Parse(ext.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "extension"));
  // Persistent IDs have no meaning in a plain pickle.
  PickleWriter pid;
  pid.Proto(2).Str("x").BinPersId().Stop();
  c = Parse(pid.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "persistent ID"));
}

TEST(WeightFileTest, NestedStreamMustHoldOnlyAStorage) {
  PickleWriter inner;
  inner.Raw(internal::LegacyTorchHeader()).Proto().Int(5).Stop();
  inner.Proto().EmptyList().Stop();
  PickleWriter p;
  p.Proto(2).Global("torch.storage", "_load_from_bytes").Bytes(inner.Take()).Tuple1().Reduce();
  p.Stop();
  auto c = Parse(p.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "something other than a storage"));

  PickleWriter bad;
  bad.Proto(2).Global("torch.storage", "_load_from_bytes").Bytes("not torch").Tuple1().Reduce();
  bad.Stop();
  c = Parse(bad.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "not a legacy torch.save stream"));
}

TEST(WeightFileTest, RejectsNonWeightFiles) {
  for (const std::string& bytes :
       {std::string(""), std::string("hello"), std::string("PK\x03\x04", 4)}) {
    EXPECT_FALSE(Parse(bytes).ok());
  }
  auto c = Parse("hello world");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "not a weight file"));
  // Trailing bytes after a plain pickle.
  PickleWriter p;
  p.Proto(2).None().Stop().Raw("junk");
  c = Parse(p.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "4 unexpected bytes"));
  auto missing = ReadWeightFile("/nonexistent/weights.pkl");
  EXPECT_FALSE(missing.ok());
}

TEST(WeightFileTest, ProtocolZeroTextOpcodes) {
  // {'a': 42, 'b': 0.5, 'c': 12345678901L, u'\u00e9t\u00e9': True, "e's\x41": None,
  //  'f': <memo 1, 'a'>} in protocol 0 text (after a PROTO 2, as the detection wants).
  std::string text =
      "(dp0\nS'a'\np1\nI42\nsS'b'\np2\nF0.5\nsS'c'\np3\nL12345678901L\nsV\\u00e9t\\u00e9\np4\n"
      "I01\nsS'e\\'s\\x41'\nNsS'f'\ng1\ns.";
  auto c = Parse("\x80\x02" + text);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(ToMap(c->values), (std::map<std::string, std::string>{{"a", "42"},
                                                                  {"b", "0.5"},
                                                                  {"c", "12345678901"},
                                                                  {"\xc3\xa9t\xc3\xa9", "True"},
                                                                  {"e's"
                                                                   "A",
                                                                   "None"},
                                                                  {"f", "a"}}));
}

TEST(WeightFileTest, BigIntsAndFloatsAsText) {
  PickleWriter p;
  p.Proto(2).EmptyDict().Mark();
  p.Str("big").Raw(std::string("\x8a\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01", 13));
  p.Str("neg").Raw(std::string("\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xc0", 11));
  p.Str("min").Int(std::numeric_limits<int64_t>::min());
  p.Str("tiny").Float(1e-300).Str("third").Float(1.0 / 3).Str("inf").Float(
      -std::numeric_limits<double>::infinity());
  p.Int(3).Str("int key").None().Str("none key").Bool(true).Str("bool key");
  p.SetItems().Stop();
  auto c = Parse(p.Take());
  ASSERT_TRUE(c.ok()) << c.status();
  auto values = ToMap(c->values);
  EXPECT_EQ(values["big"], "1208925819614629174706176");  // 2^80
  EXPECT_EQ(values["neg"], "-1180591620717411303424");    // -2^70
  EXPECT_EQ(values["min"], "-9223372036854775808");
  EXPECT_EQ(values["tiny"], "1e-300");
  EXPECT_EQ(values["third"], "0.3333333333333333");
  EXPECT_EQ(values["inf"], "-inf");
  EXPECT_EQ(values["3"], "int key");
  EXPECT_EQ(values["None"], "none key");
  EXPECT_EQ(values["True"], "bool key");
}

// ---- Bombs ------------------------------------------------------------------------

TEST(WeightFileTest, DeepNestingIsRefused) {
  // Built bottom-up: caught while unpickling.
  PickleWriter p;
  p.Proto(2);
  for (int k = 0; k < 1000; ++k) p.EmptyList();
  for (int k = 0; k < 999; ++k) p.Append();
  p.Stop();
  auto c = Parse(p.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "deeper than 100"));
  // Built top-down through the memo (each list is shallow when it is added to its
  // parent): caught by the walk.
  PickleWriter q;
  q.Proto(2).EmptyList().LongBinPut(0);
  for (uint32_t k = 1; k < 1000; ++k) {
    q.EmptyList().LongBinPut(k).Append().Pop().LongBinGet(k);
  }
  q.Pop().LongBinGet(0).Stop();
  c = Parse(q.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "deeper than 100"));
}

TEST(WeightFileTest, OverlongNamesAreRefused) {
  // One 40 KB key, memoised and used at two levels: an 80 KB name.
  PickleWriter p;
  p.Proto(2).EmptyDict().Str(std::string(40000, 'k')).BinPut(0).EmptyDict().BinGet(0).None();
  p.SetItem().SetItem().Stop();
  auto c = Parse(p.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "longer than 65536 bytes"));
}

TEST(WeightFileTest, ReferenceCyclesAreWalkedOnce) {
  // l = [1]; l.append(l)
  PickleWriter p;
  p.Proto(2).EmptyList().BinPut(0).Int(1).Append().BinGet(0).Append().Stop();
  auto c = Parse(p.Take());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(ToMap(c->values), (std::map<std::string, std::string>{{"0", "1"}}));
}

TEST(WeightFileTest, ExponentialSharingIsRefused) {
  // l0 = []; l(k+1) = [lk, lk]: 2^60 paths through 60 lists.
  PickleWriter p;
  p.Proto(2).EmptyList();
  for (int k = 0; k < 60; ++k) p.BinPut(0).Pop().Mark().BinGet(0).BinGet(0).Raw("l");
  p.Stop();
  auto c = Parse(p.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "entries in the object tree"));
}

TEST(WeightFileTest, HugeTensorViewsAreRefused) {
  struct Case {
    std::vector<int64_t> sizes, strides;
    int64_t offset;
    const char* error;
  };
  const std::vector<Case> cases = {
      {{int64_t{1} << 40, int64_t{1} << 40}, {0, 0}, 0, "tensor too large"},
      {{2}, {int64_t{1} << 49}, 0, "reaches element"},
      {{4}, {1}, 3, "reaches element"},
      {{1}, {1}, int64_t{1} << 60, "offset too large"},
  };
  for (const Case& k : cases) {
    PickleWriter p;
    p.Proto(4);
    RebuildTensor(
        p,
        [&] {
          p.Global("torch.storage", "_load_from_bytes").Bytes(StorageStream("s", {1, 2, 3, 4}));
          p.Tuple1().Reduce();
        },
        k.offset, k.sizes, k.strides);
    p.Stop();
    auto c = Parse(p.Take());
    ASSERT_FALSE(c.ok()) << k.error;
    EXPECT_TRUE(HasText(c.status().message(), k.error));
  }
}

TEST(WeightFileTest, ValueAndDecodedByteLimits) {
  // The limits are constants; the unpickler takes lower ones so the test stays small.
  internal::Unpickler::Options options;
  options.max_values = 1000;
  PickleWriter p;
  p.Proto(2).Mark();
  for (int k = 0; k < 2000; ++k) p.None();
  p.Raw("l").Stop();
  size_t consumed = 0;
  internal::Unpickler small_arena(options);
  auto v = small_arena.Load(p.bytes(), &consumed);
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(HasText(v.status().message(), "more than 1000 values"));

  // One latin-1 string decoded again and again through the memo.
  options = {};
  options.max_decoded_bytes = 1000;
  PickleWriter q;
  q.Proto(2).Mark().Str(std::string(100, 'a')).BinPut(0);
  q.Global("_codecs", "encode").BinPut(1).BinGet(0).Str("latin1").Tuple2().Reduce();
  for (int k = 0; k < 20; ++k) q.BinGet(1).BinGet(0).Str("latin1").Tuple2().Reduce();
  q.Raw("l").Stop();
  internal::Unpickler small_decode(options);
  v = small_decode.Load(q.bytes(), &consumed);
  ASSERT_FALSE(v.ok());
  EXPECT_TRUE(HasText(v.status().message(), "more than 1000 bytes"));
  // Within the limit it decodes.
  options.max_decoded_bytes = 10000;
  internal::Unpickler enough(options);
  v = enough.Load(q.bytes(), &consumed);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ((*v)->items.size(), 22u);
  EXPECT_EQ((*v)->items[1]->bytes, std::string(100, 'a'));
}

TEST(WeightFileTest, TooManyMarksAndStackEntriesAreErrors) {
  PickleWriter p;
  p.Proto(2);
  p.Raw(std::string((size_t{1} << 20) + 10, '('));
  auto c = Parse(p.Take());
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(HasText(c.status().message(), "too many MARKs"));
}

}  // namespace
}  // namespace i2s
