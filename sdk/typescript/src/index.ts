/**
 * Tern's TypeScript client SDK: `TernClient` (WebSocket transport, browser and Node), the
 * frame codec, and the protocol's enums. See README.md.
 */
export {
  TernClient,
  TernError,
  newClientMsgId,
  type ConnectionState,
  type ConversationChanges,
  type ConversationPage,
  type KickEvent,
  type LoginInfo,
  type ReadReceiptEvent,
  type RecallEvent,
  type SentMessage,
  type SyncNotifyEvent,
  type TernClientOptions,
  type TernEvents,
  type WebSocketConstructor,
  type WebSocketLike,
} from './client.js';
export {
  ClientType,
  ConversationOp,
  ConversationType,
  ElemType,
  EntryKind,
  FrameError,
  KickReason,
  SyncKind,
  decodeFrame,
  encodeConversationGet,
  encodeConversationSync,
  encodeLogin,
  encodePing,
  encodePull,
  encodePushAck,
  encodeReadReceipt,
  encodeRecall,
  encodeSend,
  type ConversationInfo,
  type Elem,
  type LastMessage,
  type KindSeqPair,
  type ServerFrame,
  type TimelineEntry,
} from './frame.js';
export { Emitter } from './emitter.js';
