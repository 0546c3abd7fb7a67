import Foundation
import MeshProxyCore

/// The body of `PUT /v1/catalog/register|deregister`:
/// `{"host": "...", "port": 8080, "address": "10.0.0.1:8080", "locality": "r/z", "labels": {...}}`,
/// checked before anything reaches the catalog.
package struct CatalogRegistration: Sendable, Equatable {
    package var key: CatalogKey
    package var record: CatalogRecord

    private struct Body: Decodable {
        var host: String
        var port: Int
        var address: String
        var locality: String?
        var labels: [String: String]?
    }

    /// Why a body was refused: the text of the 400 answer.
    package struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        package var description: String
    }

    package init(json: some Sequence<UInt8>) throws(Refusal) {
        guard let body = try? JSONDecoder().decode(Body.self, from: Data(json)) else {
            throw Refusal(description: "body must be JSON {host, port, address, locality?, labels?}")
        }
        guard (try? ServerName(parsing: body.host)) != nil, (1...65_535).contains(body.port) else {
            throw Refusal(description: "host must be a DNS name and port 1-65535")
        }
        guard let address = HostPort(parsing: body.address) else {
            throw Refusal(description: "address '\(body.address)' is not host:port")
        }
        let labels = body.labels ?? [:]
        // Kubernetes' label rules, which every catalog record must meet to cross the wire whole.
        guard labels.count <= Self.maximumLabels else {
            throw Refusal(description: "at most \(Self.maximumLabels) labels (got \(labels.count))")
        }
        for (name, value) in labels.sorted(by: { $0.key < $1.key }) {
            guard Self.isLabelName(name) else { throw Refusal(description: "label name '\(name.prefix(80))' is not a Kubernetes label name") }
            guard Self.isLabelValue(value) else { throw Refusal(description: "label '\(name)' has a value that is not a Kubernetes label value (63 characters of [A-Za-z0-9-_.])") }
        }
        var locality: Locality?
        if let text = body.locality {
            guard let parsed = Locality(parsing: text) else { throw Refusal(description: "locality '\(text)' is not region/zone/subzone") }
            locality = parsed
        }
        key = CatalogKey(host: body.host.lowercased(), port: body.port, endpoint: address)
        record = CatalogRecord(locality: locality, labels: labels)
    }

    static let maximumLabels = 64

    /// `[prefix/]name`: the prefix a DNS subdomain of at most 253 characters, the name a label value
    /// that is not empty.
    static func isLabelName(_ text: String) -> Bool {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let name = parts.last, !name.isEmpty, isLabelValue(String(name)) else { return false }
        guard parts.count == 2 else { return true }
        let prefix = parts[0]
        return !prefix.isEmpty && prefix.utf8.count <= 253
            && prefix.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
                !label.isEmpty && label.utf8.count <= 63 && label.utf8.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: "-") }
                    && isAlphanumeric(label.utf8.first!) && isAlphanumeric(label.utf8.last!)
            }
    }

    /// At most 63 characters of `[A-Za-z0-9-_.]`, beginning and ending alphanumeric; may be empty.
    static func isLabelValue(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, let last = bytes.last else { return true }
        return bytes.count <= 63 && isAlphanumeric(first) && isAlphanumeric(last)
            && bytes.allSatisfy { isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
}
