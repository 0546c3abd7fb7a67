/// Protocol Buffers' binary wire format, for the few messages EastWest exchanges with Envoy's
/// services (ext-authz's `CheckRequest`/`CheckResponse`): no generated code, no reflection.
/// Proto3: fields at their default values are not written; unknown fields are skipped on read.
package enum ProtobufWire {
    /// Appends fields in the order they are written.
    package struct Writer {
        package private(set) var bytes: [UInt8] = []

        package init() {}

        mutating func varint(_ value: UInt64) {
            var value = value
            while value >= 0x80 {
                bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
                value >>= 7
            }
            bytes.append(UInt8(value))
        }

        private mutating func tag(_ field: Int, _ wireType: UInt64) { varint(UInt64(field) << 3 | wireType) }

        package mutating func string(_ field: Int, _ value: String) {
            guard !value.isEmpty else { return }
            bytes(field, Array(value.utf8))
        }

        package mutating func bytes(_ field: Int, _ value: [UInt8]) {
            guard !value.isEmpty else { return }
            tag(field, 2)
            varint(UInt64(value.count))
            bytes += value
        }

        /// int32/int64/uint32/bool/enum: a varint (negative numbers as ten bytes, as protobuf does).
        package mutating func integer(_ field: Int, _ value: Int64) {
            guard value != 0 else { return }
            tag(field, 0)
            varint(UInt64(bitPattern: value))
        }

        /// A nested message, written by `body`; left out when it has no fields.
        package mutating func message(_ field: Int, _ body: (inout Writer) -> Void) {
            var nested = Writer()
            body(&nested)
            guard !nested.bytes.isEmpty else { return }
            bytes(field, nested.bytes)
        }

        /// A `map<string, string>`: one entry message (key 1, value 2) per pair, in the given order.
        package mutating func map(_ field: Int, _ pairs: [(String, String)]) {
            for (key, value) in pairs {
                // An entry is written even when both are empty: the key is there.
                var entry = Writer()
                entry.string(1, key)
                entry.string(2, value)
                tag(field, 2)
                varint(UInt64(entry.bytes.count))
                bytes += entry.bytes
            }
        }
    }

    /// A field as read: its number and its value (varints as numbers, length-delimited as bytes).
    package enum Value: Equatable {
        case varint(UInt64)
        case bytes(ArraySlice<UInt8>)
        case fixed64(UInt64)
        case fixed32(UInt32)

        package var integer: Int64? { if case .varint(let v) = self { Int64(bitPattern: v) } else { nil } }
        package var data: ArraySlice<UInt8>? { if case .bytes(let b) = self { b } else { nil } }
        package var string: String? { data.map { String(decoding: $0, as: UTF8.self) } }
    }

    package struct Malformed: Error, Equatable {
        package var reason: String
    }

    /// Every field of a message, in order; a truncated or malformed message throws.
    package static func fields(_ bytes: ArraySlice<UInt8>) throws(Malformed) -> [(field: Int, value: Value)] {
        var fields: [(Int, Value)] = []
        var index = bytes.startIndex
        func varint() throws(Malformed) -> UInt64 {
            var result: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard index < bytes.endIndex else { throw Malformed(reason: "a varint runs past the end") }
                let byte = bytes[index]
                index += 1
                guard shift < 64 else { throw Malformed(reason: "a varint longer than ten bytes") }
                result |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return result }
                shift += 7
            }
        }
        func take(_ count: Int) throws(Malformed) -> ArraySlice<UInt8> {
            guard count >= 0, bytes.endIndex - index >= count else { throw Malformed(reason: "a field runs past the end") }
            defer { index += count }
            return bytes[index..<(index + count)]
        }
        while index < bytes.endIndex {
            let key = try varint()
            let field = Int(truncatingIfNeeded: key >> 3)
            guard field > 0 else { throw Malformed(reason: "field number 0") }
            switch key & 7 {
            case 0: fields.append((field, .varint(try varint())))
            case 1: fields.append((field, .fixed64(try take(8).reversed().reduce(0) { $0 << 8 | UInt64($1) })))
            case 2:
                let length = try varint()
                guard length <= UInt64(Int.max) else { throw Malformed(reason: "a length past any message") }
                fields.append((field, .bytes(try take(Int(length)))))
            case 5: fields.append((field, .fixed32(try take(4).reversed().reduce(0) { $0 << 8 | UInt32($1) })))
            case let other: throw Malformed(reason: "wire type \(other) (groups are not read)")
            }
        }
        return fields
    }
}
