// The handshake (docs/protocol.md, "HELLO and HELLO_ACK"): a node tells the coordinator who it is,
// refuses a coordinator or neighbour of another cluster, model or stage, holds one connection per
// role (BUSY for a second), takes an observer of its own cluster and model, and only for STATUS
// and SHUTDOWN.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "nmcm/net/protocol.h"
#include "node_client.h"

namespace nmcm::runtime {
namespace {

using net::ErrorCode;
using net::MsgType;
using test::Client;
using test::Received;
using test::TestNode;

TEST(NodeHandshake, CoordinatorLearnsTheNodesIdentity) {
  TestNode node(test::golden("cnn_whole"));
  ASSERT_TRUE(node.started());
  Client client;
  ASSERT_TRUE(client.connect(node.port()));
  const Received ack = client.handshake(test::coordinator_hello(node));
  ASSERT_TRUE(ack.ok());
  ASSERT_EQ(ack.type(), MsgType::kHelloAck);
  net::Hello h{};
  ASSERT_TRUE(net::decode(ack.fixed.data(), &h));
  EXPECT_EQ(h.role, net::Role::kNode);
  EXPECT_EQ(h.stage_index, 0);
  EXPECT_EQ(h.stage_count, 1);
  EXPECT_EQ(h.micro_batch, 4);
  EXPECT_EQ(h.slots, 2);
  EXPECT_EQ(h.input_features, 64u);
  EXPECT_EQ(h.output_features, 10u);
  EXPECT_EQ(h.tensor_count, node.stage().tensor_count());
  // The receive limit is the biggest frame the stage takes: INPUTS of 4 x 64 floats.
  EXPECT_EQ(h.max_payload, net::payload_limit(4, 64, 10, true));
  EXPECT_EQ(h.max_payload, 8u + 4 * 64 * 4);
  EXPECT_EQ(std::memcmp(h.model_hash, node.model_hash(), 16), 0);
  EXPECT_EQ(h.firmware_hash[0], 0xF0);
  EXPECT_STREQ(h.cluster, test::kCluster);

  ASSERT_EQ(client.send(MsgType::kStatusRequest, net::kNoBatch, nullptr, 0), net::IoStatus::kOk);
  const Received status = client.receive();
  ASSERT_EQ(status.type(), MsgType::kStatus);
  net::StatusReport report{};
  ASSERT_TRUE(net::decode(status.fixed.data(), &report));
  EXPECT_EQ(report.state, net::NodeState::kIdle);
  EXPECT_EQ(report.steps, 0u);
  EXPECT_TRUE(std::isnan(report.last_loss));
  EXPECT_EQ(report.arena_used, node.stage().layout().header.arena_size);
  EXPECT_EQ(report.arena_capacity, 1u << 20);
  EXPECT_EQ(report.tick_hz, 1000000000u);
  EXPECT_EQ(report.frames_received, 2u);  // HELLO, STATUS_REQUEST
  EXPECT_EQ(report.frames_sent, 1u);      // HELLO_ACK (this STATUS is counted after it is sent)
  EXPECT_EQ(report.bytes_received, 2u * 32 + 128);
  EXPECT_EQ(std::memcmp(report.firmware_hash, h.firmware_hash, 16), 0);
}

// Each refusal is an ERROR with its code, then the node closes the connection.
void expect_refused(const TestNode& node, const net::Hello& hello, ErrorCode code) {
  Client client;
  ASSERT_TRUE(client.connect(node.port()));
  const Received answer = client.handshake(hello);
  ASSERT_TRUE(answer.ok());
  EXPECT_EQ(answer.type(), MsgType::kError);
  EXPECT_EQ(answer.error_code(), code) << answer.reason();
  EXPECT_TRUE(client.closed_by_peer());
}

TEST(NodeHandshake, RefusesAnotherClusterModelOrStage) {
  TestNode node(test::golden("cnn_stage1"));
  ASSERT_TRUE(node.started());
  net::Hello h = test::coordinator_hello(node);
  std::strcpy(h.cluster, "other-cluster");
  expect_refused(node, h, ErrorCode::kClusterMismatch);

  h = test::coordinator_hello(node);
  h.model_hash[3] ^= 1;
  expect_refused(node, h, ErrorCode::kModelMismatch);

  h = test::coordinator_hello(node);
  h.stage_index = 0;
  expect_refused(node, h, ErrorCode::kStageMismatch);

  h = test::coordinator_hello(node);
  h.stage_count = 3;
  expect_refused(node, h, ErrorCode::kStageMismatch);

  h = test::coordinator_hello(node);
  h.role = net::Role::kNode;
  expect_refused(node, h, ErrorCode::kUnexpected);

  h = test::coordinator_hello(node);
  h.max_payload = 100;
  expect_refused(node, h, ErrorCode::kMalformed);
}

TEST(NodeHandshake, ChecksTheUpstreamNeighbour) {
  TestNode second(test::golden("cnn_stage1"));
  ASSERT_TRUE(second.started());
  net::Hello up = test::coordinator_hello(second);
  up.role = net::Role::kUpstream;
  up.stage_index = 0;
  up.output_features = 128;  // stage 1 takes the 8 x 4 x 4 flattened pool output
  up.max_payload = 8 + 4 * 128 * 4;
  {
    Client client;
    ASSERT_TRUE(client.connect(second.port()));
    EXPECT_EQ(client.handshake(up).type(), MsgType::kHelloAck);
  }
  net::Hello wrong = up;
  wrong.output_features = 127;
  // The previous upstream connection is closed by now or found closed: not BUSY.
  expect_refused(second, wrong, ErrorCode::kStageMismatch);
  wrong = up;
  wrong.stage_index = 1;
  expect_refused(second, wrong, ErrorCode::kStageMismatch);

  // Stage 0 has no upstream neighbour.
  TestNode first(test::golden("cnn_stage0"), test::NodeOptions{{}, 0, second.port()});
  ASSERT_TRUE(first.started());
  net::Hello to_first = test::coordinator_hello(first);
  to_first.role = net::Role::kUpstream;
  expect_refused(first, to_first, ErrorCode::kStageMismatch);
}

TEST(NodeHandshake, OneConnectionPerRoleAndObserversOnlyAsk) {
  TestNode node(test::golden("mlp_whole"));
  ASSERT_TRUE(node.started());
  auto coordinator = test::connect_coordinator(node);
  expect_refused(node, test::coordinator_hello(node), ErrorCode::kBusy);

  // An observer of this cluster and model, whatever its stage fields.
  Client observer;
  ASSERT_TRUE(observer.connect(node.port()));
  ASSERT_EQ(observer.handshake(test::observer_hello(node.model_hash())).type(), MsgType::kHelloAck);
  expect_refused(node, test::observer_hello(node.model_hash()), ErrorCode::kBusy);
  ASSERT_EQ(observer.send(MsgType::kStatusRequest, net::kNoBatch, nullptr, 0), net::IoStatus::kOk);
  EXPECT_EQ(observer.receive().type(), MsgType::kStatus);
  observer.send_message(MsgType::kBatchBegin,
                        net::BatchBegin{8, 1, net::Mode::kTrain, net::LossCode::kCrossEntropy, 0},
                        net::FrameMeta{0, 1, 0});
  const Received refused = observer.receive();
  EXPECT_EQ(refused.error_code(), ErrorCode::kUnexpected) << refused.reason();
  EXPECT_TRUE(observer.closed_by_peer());

  // A coordinator that reconnects at once is taken: the old connection's close is read first.
  coordinator->close();
  auto again = test::connect_coordinator(node);
  EXPECT_EQ(again->send(MsgType::kStatusRequest, net::kNoBatch, nullptr, 0), net::IoStatus::kOk);
  EXPECT_EQ(again->receive().type(), MsgType::kStatus);
}

TEST(NodeHandshake, NothingBeforeHelloAndForeignStreamsAreRefused) {
  TestNode node(test::golden("mlp_whole"));
  ASSERT_TRUE(node.started());
  {
    Client client;
    ASSERT_TRUE(client.connect(node.port()));
    client.send(MsgType::kStatusRequest, net::kNoBatch, nullptr, 0);
    const Received r = client.receive();
    EXPECT_EQ(r.error_code(), ErrorCode::kUnexpected);
    EXPECT_TRUE(client.closed_by_peer());
  }
  {
    Client client;
    ASSERT_TRUE(client.connect(node.port()));
    client.send_raw({'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P'});
    const Received r = client.receive();
    EXPECT_EQ(r.error_code(), ErrorCode::kBadMagic);
    EXPECT_TRUE(client.closed_by_peer());
  }
  EXPECT_EQ(test::status_of(node).frames_rejected, 2u);
}

// A HELLO for a role that is held reads the holder's connection first (a close there frees the
// role); a frame of the holder's read on the way is handled after the handshake, not lost.
TEST(NodeHandshake, AFrameOfTheHolderReadDuringAHelloIsStillAnswered) {
  TestNode node(test::golden("mlp_whole"));
  ASSERT_TRUE(node.started());
  auto coordinator = test::connect_coordinator(node);
  for (int round = 0; round < 3; ++round) {
    ASSERT_EQ(coordinator->send(MsgType::kStatusRequest, net::kNoBatch, nullptr, 0),
              net::IoStatus::kOk);
    expect_refused(node, test::coordinator_hello(node), ErrorCode::kBusy);
    EXPECT_EQ(coordinator->receive().type(), MsgType::kStatus) << "round " << round;
  }
}

TEST(NodeHandshake, ShutdownAnswersThenStops) {
  TestNode node(test::golden("mlp_whole"));
  ASSERT_TRUE(node.started());
  Client observer;
  ASSERT_TRUE(observer.connect(node.port()));
  ASSERT_EQ(observer.handshake(test::observer_hello(node.model_hash())).type(), MsgType::kHelloAck);
  auto coordinator = test::connect_coordinator(node);
  observer.send(MsgType::kShutdown, net::kNoBatch, nullptr, 0);
  const Received ack = observer.receive();
  ASSERT_EQ(ack.type(), MsgType::kAck);
  net::Ack a{};
  net::decode(ack.fixed.data(), &a);
  EXPECT_EQ(a.acked_type, MsgType::kShutdown);
  EXPECT_EQ(a.acked_sequence, 1u);
  EXPECT_TRUE(observer.closed_by_peer());
  EXPECT_TRUE(coordinator->closed_by_peer());
  EXPECT_TRUE(node.wait_stopped(2000));
  Client late;
  EXPECT_FALSE(late.connect(node.port()));  // nobody listens any more
}

// An observer is a tool of one cluster (`nmcm status`, `nmcm down`): one of another cluster or
// model that found this port is refused before it can read anything or stop the node.
TEST(NodeHandshake, ObserversOfAnotherClusterOrModelAreRefused) {
  TestNode node(test::golden("mlp_whole"));
  ASSERT_TRUE(node.started());
  net::Hello other_cluster = test::observer_hello(node.model_hash());
  std::strcpy(other_cluster.cluster, "another-cluster");
  expect_refused(node, other_cluster, ErrorCode::kClusterMismatch);
  net::Hello other_model = test::observer_hello(node.model_hash());
  other_model.model_hash[3] ^= 0x01;
  expect_refused(node, other_model, ErrorCode::kModelMismatch);
  // A stranger's SHUTDOWN right after its HELLO goes nowhere: the node still serves.
  Client stranger;
  ASSERT_TRUE(stranger.connect(node.port()));
  stranger.send_message(MsgType::kHello, other_cluster);
  stranger.send(MsgType::kShutdown, net::kNoBatch, nullptr, 0);
  EXPECT_EQ(stranger.receive().error_code(), ErrorCode::kClusterMismatch);
  EXPECT_TRUE(stranger.closed_by_peer());
  EXPECT_EQ(test::status_of(node).frames_rejected, 3u);
}

// HELLO_ACK carries the number the node was started with, for whoever started it to recognise it.
TEST(NodeHandshake, HelloAckCarriesTheInstanceTheNodeWasStartedWith) {
  for (uint32_t instance : {1u, 0xDEADBEEFu, 0xFFFFFFFFu}) {
    test::NodeOptions options;
    options.instance = instance;
    TestNode node(test::golden("mlp_whole"), options);
    ASSERT_TRUE(node.started());
    Client observer;
    ASSERT_TRUE(observer.connect(node.port()));
    const Received ack = observer.handshake(test::observer_hello(node.model_hash()));
    ASSERT_EQ(ack.type(), MsgType::kHelloAck);
    net::Hello h{};
    ASSERT_TRUE(net::decode(ack.fixed.data(), &h));
    EXPECT_EQ(h.instance, instance);
  }
}

// Idle connections that never say HELLO, as many as the node has slots or more, do not keep
// the coordinator out: the oldest silent one gives way; identified connections keep their slot.
TEST(NodeHandshake, IdleConnectionsGiveWayToTheCoordinator) {
  TestNode node(test::golden("mlp_whole"));
  ASSERT_TRUE(node.started());
  Client observer;
  ASSERT_TRUE(observer.connect(node.port()));
  ASSERT_EQ(observer.handshake(test::observer_hello(node.model_hash())).type(), MsgType::kHelloAck);
  for (uint32_t idle_count : {kMaxInbound, kMaxInbound + 3}) {
    std::vector<std::unique_ptr<Client>> idle;
    for (uint32_t i = 0; i < idle_count; ++i) {
      idle.push_back(std::make_unique<Client>());
      ASSERT_TRUE(idle.back()->connect(node.port()));
    }
    auto coordinator = test::connect_coordinator(node);
    coordinator->send(MsgType::kStatusRequest, net::kNoBatch, nullptr, 0);
    EXPECT_EQ(coordinator->receive().type(), MsgType::kStatus);
  }
  // The observer that said HELLO first kept its slot throughout.
  ASSERT_EQ(observer.send(MsgType::kStatusRequest, net::kNoBatch, nullptr, 0), net::IoStatus::kOk);
  EXPECT_EQ(observer.receive().type(), MsgType::kStatus);
}

}  // namespace
}  // namespace nmcm::runtime
