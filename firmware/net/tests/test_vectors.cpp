// The C++ decoder against the shared vectors (tests/vectors/protocol/vectors.txt, written by
// generate.py from the same facts as vectors.json, which the Python codec is tested against).
// Each vector is decoded three ways — whole buffer, one byte at a time, and through
// receive_frame() over a transport that hands out 7-byte chunks — and must give the frames and the
// error the vector names every time.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "net_test_util.h"
#include "nmcm/crc32.h"
#include "nmcm/net/decoder.h"
#include "nmcm/net/frame_io.h"
#include "nmcm/net/payload.h"
#include "nmcm/net/wire.h"

namespace nmcm::net {
namespace {

struct FrameRecord {
  unsigned type = 0, flags = 0, sequence = 0, batch = 0, micro_batch = 0;
  unsigned payload_length = 0, data_length = 0, data_crc = 0;
  std::string fields;

  bool operator==(const FrameRecord& o) const {
    return type == o.type && flags == o.flags && sequence == o.sequence && batch == o.batch &&
           micro_batch == o.micro_batch && payload_length == o.payload_length &&
           data_length == o.data_length && data_crc == o.data_crc && fields == o.fields;
  }
};

std::ostream& operator<<(std::ostream& os, const FrameRecord& f) {
  return os << "{type " << f.type << " flags " << f.flags << " seq " << f.sequence << " batch "
            << f.batch << " mb " << f.micro_batch << " len " << f.payload_length << " data "
            << f.data_length << " crc " << f.data_crc << " [" << f.fields << "]}";
}

struct Vector {
  std::string name, file, error;
  uint32_t max_payload = 0;
  bool check_sequence = true;
  std::vector<FrameRecord> frames;
};

// Test names and failure messages show the vector's name, not its bytes.
void PrintTo(const Vector& v, std::ostream* os) { *os << v.name; }

std::vector<Vector> load_vectors() {
  std::ifstream in(test::vectors_dir() + "/vectors.txt");
  std::vector<Vector> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string word;
    ls >> word;
    if (word == "vector") {
      Vector v;
      int check = 1;
      ls >> v.name >> v.file >> v.max_payload >> check >> v.error;
      v.check_sequence = check != 0;
      out.push_back(v);
    } else if (word == "frame") {
      FrameRecord f;
      std::string crc;
      ls >> f.type >> f.flags >> f.sequence >> f.batch >> f.micro_batch >> f.payload_length >>
          f.data_length >> crc;
      f.data_crc = static_cast<unsigned>(std::stoul(crc, nullptr, 16));
      std::string token;
      while (ls >> token) f.fields += (f.fields.empty() ? "" : " ") + token;
      out.back().frames.push_back(f);
    }
  }
  return out;
}

// The fixed-part fields as generate.py writes them: name=value in table order, floats as their
// float32 bits, hashes in hex.
class Fields {
 public:
  template <typename T>
  Fields& add(const char* name, T value) {
    return text(name, std::to_string(static_cast<unsigned long long>(value)));
  }
  Fields& f32(const char* name, float value) {
    char buf[16];
    uint8_t bytes[4];
    put_f32(bytes, value);
    std::snprintf(buf, sizeof buf, "0x%08x", get_u32(bytes));
    return text(name, buf);
  }
  Fields& hash(const char* name, const uint8_t* h) { return text(name, test::hex(h, kHashSize)); }
  Fields& text(const char* name, const std::string& value) {
    s_ += (s_.empty() ? "" : " ") + std::string(name) + "=" + value;
    return *this;
  }
  std::string str() const { return s_; }

 private:
  std::string s_;
};

template <typename T>
T decoded(const uint8_t* fixed) {
  T x{};
  EXPECT_TRUE(decode(fixed, &x));
  return x;
}

std::string describe(MsgType type, const uint8_t* fixed) {
  Fields f;
  switch (type) {
    case MsgType::kHello:
    case MsgType::kHelloAck: {
      const auto x = decoded<Hello>(fixed);
      f.add("role", x.role).add("stage_index", x.stage_index).add("stage_count", x.stage_count);
      f.add("micro_batch", x.micro_batch).add("max_payload", x.max_payload);
      f.add("input_features", x.input_features).add("output_features", x.output_features);
      f.add("slots", x.slots).add("tensor_count", x.tensor_count);
      f.hash("model_hash", x.model_hash).hash("firmware_hash", x.firmware_hash);
      f.text("cluster", x.cluster);
      break;
    }
    case MsgType::kError: {
      const auto x = decoded<ErrorHead>(fixed);
      f.add("code", x.code).add("detail", x.detail);
      break;
    }
    case MsgType::kAck: {
      const auto x = decoded<Ack>(fixed);
      f.add("acked_type", x.acked_type).add("acked_sequence", x.acked_sequence);
      break;
    }
    case MsgType::kShutdown:
    case MsgType::kStatusRequest:
      break;
    case MsgType::kStatus: {
      const auto x = decoded<StatusReport>(fixed);
      f.add("stage_index", x.stage_index).add("stage_count", x.stage_count).add("state", x.state);
      f.add("steps", x.steps).add("batch", x.batch).f32("last_loss", x.last_loss);
      f.add("arena_used", x.arena_used).add("arena_capacity", x.arena_capacity);
      f.add("tick_hz", x.tick_hz).add("compute_ticks", x.compute_ticks);
      f.add("comm_ticks", x.comm_ticks).add("idle_ticks", x.idle_ticks);
      f.add("bytes_sent", x.bytes_sent).add("bytes_received", x.bytes_received);
      f.add("frames_sent", x.frames_sent).add("frames_received", x.frames_received);
      f.add("frames_rejected", x.frames_rejected).add("uptime_ms", x.uptime_ms);
      f.hash("model_hash", x.model_hash).hash("firmware_hash", x.firmware_hash);
      break;
    }
    case MsgType::kBatchBegin: {
      const auto x = decoded<BatchBegin>(fixed);
      f.add("batch_size", x.batch_size).add("micro_batches", x.micro_batches);
      f.add("mode", x.mode).add("loss", x.loss).add("epoch", x.epoch);
      break;
    }
    case MsgType::kInputs:
    case MsgType::kActivations:
    case MsgType::kGradients: {
      const auto x = decoded<TensorHead>(fixed);
      f.add("samples", x.samples).add("features", x.features);
      break;
    }
    case MsgType::kLabels:
      f.add("samples", decoded<LabelsHead>(fixed).samples);
      break;
    case MsgType::kMetrics: {
      const auto x = decoded<Metrics>(fixed);
      f.f32("loss_sum", x.loss_sum).add("correct", x.correct).add("samples", x.samples);
      break;
    }
    case MsgType::kStep: {
      const auto x = decoded<Step>(fixed);
      f.f32("lr", x.lr).f32("momentum", x.momentum).f32("weight_decay", x.weight_decay);
      break;
    }
    case MsgType::kGetWeights: {
      const auto x = decoded<GetWeights>(fixed);
      f.add("tensor", x.tensor).add("kind", x.kind).add("offset", x.offset).add("count", x.count);
      break;
    }
    case MsgType::kWeights:
    case MsgType::kSetWeights: {
      const auto x = decoded<WeightsHead>(fixed);
      f.add("tensor", x.tensor).add("kind", x.kind).add("offset", x.offset);
      f.add("count", x.count).add("total", x.total);
      break;
    }
  }
  return f.str();
}

FrameRecord record(const FrameDecoder& d, const uint8_t* data) {
  const FrameHeader& h = d.header();
  FrameRecord r;
  r.type = static_cast<unsigned>(h.type);
  r.flags = h.flags;
  r.sequence = h.sequence;
  r.batch = h.batch;
  r.micro_batch = h.micro_batch;
  r.payload_length = h.payload_length;
  r.data_length = d.data_size();
  r.data_crc = crc32(data, d.data_size());
  r.fields = describe(h.type, d.fixed());
  return r;
}

struct Outcome {
  std::vector<FrameRecord> frames;
  std::string error = "ok";
};

// Push mode: feed() in chunks of `chunk` bytes. Each data part goes to a buffer of exactly its
// size, so that ASan reports any write past it.
Outcome decode_by_feed(const Vector& v, const std::vector<uint8_t>& bytes, size_t chunk) {
  FrameDecoder d(v.max_payload, v.check_sequence);
  Outcome out;
  std::unique_ptr<uint8_t[]> data;
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t used = 0;
    const size_t n = bytes.size() - pos < chunk ? bytes.size() - pos : chunk;
    DecodeEvent e = d.feed(bytes.data() + pos, n, &used);
    pos += used;
    if (e == DecodeEvent::kPayload) {
      data.reset(new uint8_t[d.data_size()]);
      e = d.accept_payload(data.get(), d.data_size());
    }
    if (e == DecodeEvent::kFrame) out.frames.push_back(record(d, data.get()));
    if (e == DecodeEvent::kError) {
      out.error = error_name(d.error());
      return out;
    }
  }
  const ErrorCode end = d.end_of_stream();
  if (end != ErrorCode::kNone) out.error = error_name(end);
  return out;
}

class StoreRouter final : public PayloadRouter {
 public:
  Route route(const FrameDecoder& d) override {
    data.reset(new uint8_t[d.data_size()]);
    return Route::to(data.get(), d.data_size());
  }
  std::unique_ptr<uint8_t[]> data;
};

// Pull mode, as a node reads: receive_frame() over a transport that gives 7 bytes at a time.
Outcome decode_by_receive(const Vector& v, const std::vector<uint8_t>& bytes) {
  test::MemoryTransport t;
  t.incoming = bytes;
  t.chunk = 7;
  FrameDecoder d(v.max_payload, v.check_sequence);
  StoreRouter router;
  Outcome out;
  for (;;) {
    const ReceiveResult r = receive_frame(&t, &d, &router, 0, 0);
    if (r.ok()) {
      out.frames.push_back(record(d, router.data.get()));
      continue;
    }
    if (r.error != ErrorCode::kNone) out.error = error_name(r.error);
    return out;
  }
}

class ProtocolVector : public ::testing::TestWithParam<Vector> {};

TEST_P(ProtocolVector, DecodesAsDescribed) {
  const Vector& v = GetParam();
  const std::vector<uint8_t> bytes = test::read_file(test::vectors_dir() + "/" + v.file);
  ASSERT_FALSE(bytes.empty()) << v.file;
  for (const size_t chunk : {bytes.size(), size_t{1}}) {
    const Outcome got = decode_by_feed(v, bytes, chunk);
    EXPECT_EQ(got.frames, v.frames) << "feeding " << chunk << " bytes at a time";
    EXPECT_EQ(got.error, v.error) << "feeding " << chunk << " bytes at a time";
  }
  const Outcome got = decode_by_receive(v, bytes);
  EXPECT_EQ(got.frames, v.frames) << "through receive_frame";
  EXPECT_EQ(got.error, v.error) << "through receive_frame";
}

INSTANTIATE_TEST_SUITE_P(Vectors, ProtocolVector, ::testing::ValuesIn(load_vectors()),
                         [](const ::testing::TestParamInfo<Vector>& param_info) {
                           return param_info.param.name;
                         });

TEST(ProtocolVectors, AreThereAndCoverEveryError) {
  const std::vector<Vector> all = load_vectors();
  ASSERT_GE(all.size(), 40u);
  std::vector<std::string> errors;
  for (const Vector& v : all) errors.push_back(v.error);
  for (const char* kind : {"ok", "bad_magic", "bad_version", "bad_header", "unknown_type",
                           "too_large", "malformed", "bad_crc", "truncated", "sequence"}) {
    EXPECT_NE(std::find(errors.begin(), errors.end(), kind), errors.end()) << kind;
  }
}

}  // namespace
}  // namespace nmcm::net
