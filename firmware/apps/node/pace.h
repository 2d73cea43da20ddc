// Paced sim nodes (spec.sim.pace: model, docs/cost-model.md): a sim node that takes the cost
// model's time for every piece of work (each layer's forward and backward, the loss, the
// optimizer step) and for every frame its W5500 moves, so that a sim cluster's wall time plays
// out the modelled MCUs' schedule. The arithmetic is untouched; only time is spent.
//
// nmcm writes each node's pace table (nmcm_deploy/costs/pace.py) and starts the node with
// --pace FILE. Host only: the boards and QEMU take their own time.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/blob.h"
#include "nmcm/net/transport.h"
#include "nmcm/runtime/node.h"
#include "nmcm/stage.h"

namespace nmcm::app {

// Modelled seconds of a call on a micro-batch of n samples: per call + per sample × n, plus a
// term for n mod 4 (the linear kernels tile samples by four, so a remainder costs its own).
struct PaceLinear {
  double per_call_s = 0;
  double per_sample_s = 0;
  double per_residue_s[4] = {0, 0, 0, 0};
  double at(std::uint32_t n) const { return per_call_s + per_sample_s * n + per_residue_s[n % 4]; }
};

// One node's modelled times, in MCU seconds (the pacer multiplies them by `scale`).
struct PaceTable {
  double scale = 1;  // host seconds per modelled MCU second
  std::uint32_t layers = 0;
  PaceLinear forward[kMaxLayers];
  PaceLinear backward[kMaxLayers];
  PaceLinear loss;
  double step_s = 0;
  // A frame through the node's W5500: SPI seconds per frame and per byte, each way.
  PaceLinear send;  // per_call_s: per frame; per_sample_s: per byte
  PaceLinear receive;
  // The frame's time on Ethernet after the sender's SPI burst, in TCP segments.
  double wire_bps = 0;
  std::uint32_t segment_bytes = 1460;
  std::uint32_t segment_overhead_bytes = 0;

  double send_s(std::uint32_t frame_bytes) const;  // SPI out, then the wire
  double receive_s(std::uint32_t frame_bytes) const;
  double work_s(StagePhase phase, std::uint32_t layer, std::uint32_t n) const;
};

// Reads a table written by nmcm (one directive per line; '#' starts a comment). On a problem,
// false and "line N: what" in `error`.
bool parse_pace_table(const char* text, PaceTable* out, char* error, std::size_t error_size);

// One node's timeline. Each paced piece starts now, or where the previous one ended if that was
// a moment ago (so that a sleep's overshoot is not added up piece after piece), and ends
// `modelled × scale` later: the pacer sleeps until then unless the host took longer.
class Pacer {
 public:
  explicit Pacer(const PaceTable& table);
  const PaceTable& table() const { return table_; }

  // Paces every piece of work of `stage` (its StageProbe).
  void attach(Stage& stage);
  void begin();
  void end(double modelled_s);
  void spend(double modelled_s) {
    begin();
    end(modelled_s);
  }

  // What was paced, for the node's log and the tests.
  struct Totals {
    std::uint64_t pieces = 0;
    std::uint64_t frames_sent = 0;
    std::uint64_t frames_received = 0;
    std::uint64_t bytes_sent = 0;
    std::uint64_t bytes_received = 0;
    double modelled_s = 0;  // before scaling
  };
  const Totals& totals() const { return totals_; }
  Totals& totals() { return totals_; }

 private:
  static void probe(void* self, StagePhase phase, std::uint32_t layer, std::uint32_t n, bool done);
  PaceTable table_;
  std::int64_t start_ns_ = 0;
  std::int64_t end_ns_ = 0;
  Totals totals_;
};

// A transport whose frames take the table's time: a frame about to be sent costs its send time
// (SPI, then the wire) before its first byte goes; a frame received costs its receive time when
// its last byte is in. Frames are found by their headers (docs/protocol.md).
class PacedTransport final : public net::Transport {
 public:
  void wrap(net::Transport* inner, Pacer* pacer);
  net::Transport* inner() const { return inner_; }

  net::IoStatus send_all(const void* data, std::size_t len, std::uint32_t timeout_ms) override;
  net::IoResult recv_some(void* data, std::size_t capacity, std::uint32_t timeout_ms) override;
  void close() override { inner_->close(); }

 private:
  void count_received(const std::uint8_t* data, std::size_t n);
  net::Transport* inner_ = nullptr;
  Pacer* pacer_ = nullptr;
  std::size_t send_left_ = 0;  // bytes of the frame being sent still to come
  std::uint8_t head_[net::kHeaderSize] = {};
  std::size_t head_have_ = 0;
  std::size_t recv_left_ = 0;  // bytes of the frame being received after its header
  std::uint32_t head_frame_payload_ = 0;
};

// A node network whose transports are paced; everything else is the inner network's.
class PacedNetwork final : public runtime::NodeNetwork {
 public:
  PacedNetwork(runtime::NodeNetwork& inner, Pacer& pacer) : inner_(inner), pacer_(pacer) {}

  net::IoStatus listen(const runtime::Endpoint& endpoint) override {
    return inner_.listen(endpoint);
  }
  net::Transport* accept() override;
  net::IoStatus connect(const runtime::Endpoint& endpoint, std::uint32_t timeout_ms,
                        net::Transport** out) override;
  void release(net::Transport* transport) override;
  void stop_listening() override { inner_.stop_listening(); }
  void wait(std::uint32_t timeout_ms) override { inner_.wait(timeout_ms); }

 private:
  static constexpr std::size_t kSlots = 8;  // more than a node's connections
  net::Transport* wrap(net::Transport* inner);
  runtime::NodeNetwork& inner_;
  Pacer& pacer_;
  PacedTransport slots_[kSlots];
};

}  // namespace nmcm::app
