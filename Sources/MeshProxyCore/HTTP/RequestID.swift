/// Envoy's `x-request-id`: a random version-4 UUID in lower case, made from the connection's own
/// generator — Foundation's `UUID()` cost a `getrandom` system call and a formatted print per
/// request.
package enum RequestID {
    private static let hex = Array("0123456789abcdef".utf8)

    package static func make(_ random: inout SplitMix64) -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        withUnsafeBytes(of: random.next()) { for i in 0..<8 { bytes[i] = $0[i] } }
        withUnsafeBytes(of: random.next()) { for i in 0..<8 { bytes[8 + i] = $0[i] } }
        bytes[6] = bytes[6] & 0x0F | 0x40  // version 4
        bytes[8] = bytes[8] & 0x3F | 0x80  // RFC 4122 variant
        var text = [UInt8]()
        text.reserveCapacity(36)
        for (index, byte) in bytes.enumerated() {
            if index == 4 || index == 6 || index == 8 || index == 10 { text.append(UInt8(ascii: "-")) }
            text.append(hex[Int(byte >> 4)])
            text.append(hex[Int(byte & 0x0F)])
        }
        return String(decoding: text, as: UTF8.self)
    }
}
