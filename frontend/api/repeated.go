package api

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// repeated builds a response's repeated message field in its wire form,
// one element at a time, so that a response of 65,536 routes is a
// megabyte or two of bytes rather than that many messages on the heap.
// Each element is marshalled by the protobuf library; the bytes are set
// as the response's unknown fields, which the library marshals as they
// are, so a client reads them as the field's elements, in order.
type repeated struct {
	field protowire.Number
	raw   []byte
	buf   []byte // one element, reused
}

// newRepeated builds field name of messages like msg.
func newRepeated(msg proto.Message, name protoreflect.Name) *repeated {
	return &repeated{field: msg.ProtoReflect().Descriptor().Fields().ByName(name).Number()}
}

// add appends one element.
func (r *repeated) add(m proto.Message) {
	r.buf, _ = proto.MarshalOptions{}.MarshalAppend(r.buf[:0], m) // a message of known fields only: it cannot fail
	r.raw = protowire.AppendTag(r.raw, r.field, protowire.BytesType)
	r.raw = protowire.AppendBytes(r.raw, r.buf)
}

// into puts the elements in msg.
func (r *repeated) into(msg proto.Message) { msg.ProtoReflect().SetUnknown(r.raw) }
