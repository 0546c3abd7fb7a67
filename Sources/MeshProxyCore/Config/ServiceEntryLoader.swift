import Foundation
import NIOCore
import Yams

extension IstioPolicyLoader {
    /// Valid ServiceEntry / WorkloadEntry fields EastWest does not carry out yet.
    static let serviceEntryNotImplemented: Set<String> = ["exportTo", "subjectAltNames", "network", "weight", "serviceAccount"]

    static func readServiceEntry(_ spec: Node, _ map: SourceMap, _ loaded: inout Loaded) -> [ConfigError] {
        readNamed(ServiceEntry.self, kind: "ServiceEntry", notImplemented: serviceEntryNotImplemented, spec: spec, map: map, loaded: &loaded,
                  check: { check($0, map: map) }) { entry, loaded in loaded.serviceEntries.append(entry) }
    }

    static func readWorkloadEntry(_ spec: Node, _ map: SourceMap, _ loaded: inout Loaded) -> [ConfigError] {
        readNamed(WorkloadEntry.self, kind: "WorkloadEntry", notImplemented: serviceEntryNotImplemented, spec: spec, map: map, loaded: &loaded,
                  check: { entry in
                      let missing = (entry.address ?? "").isEmpty
                      return (missing ? [map.error(.missingField, at: FieldPath().key("spec").key("address"), "a WorkloadEntry needs an address")] : [], [])
                  }) { entry, loaded in loaded.workloadEntries.append(entry) }
    }

    /// What Istio's validation (`ValidateServiceEntry`) rejects, and what a gateway cannot do.
    static func check(_ entry: ServiceEntry, map: SourceMap) -> (errors: [ConfigError], warnings: [ConfigError]) {
        var errors: [ConfigError] = []
        var warnings: [ConfigError] = []
        let spec = FieldPath().key("spec")
        let hosts = entry.hosts ?? []
        if hosts.isEmpty { errors.append(map.error(.missingField, at: spec.key("hosts"), "a ServiceEntry needs at least one host")) }
        let ports = entry.ports ?? []
        if ports.isEmpty { errors.append(map.error(.missingField, at: spec.key("ports"), "a ServiceEntry needs at least one port")) }
        var names: Set<String> = []
        for (i, port) in ports.enumerated() {
            let path = spec.key("ports").index(i)
            if !(1...65_535).contains(port.number) { errors.append(map.error(.invalidValue, at: path.key("number"), "port must be 1-65535")) }
            if let name = port.name, !names.insert(name).inserted { errors.append(map.error(.duplicate, at: path.key("name"), "port name '\(name)' is used twice")) }
            if let proto = port.protocol, ServiceProtocol(istioName: proto) == nil {
                errors.append(map.error(.invalidValue, at: path.key("protocol"), "'\(proto)' is not a protocol Istio knows"))
            }
        }
        let resolution = entry.resolution ?? "NONE"
        if !ServiceEntry.resolutions.contains(resolution) {
            errors.append(map.error(.invalidValue, at: spec.key("resolution"), "resolution must be one of \(ServiceEntry.resolutions.sorted().joined(separator: ", "))"))
        }
        if let location = entry.location, !ServiceEntry.locations.contains(location) {
            errors.append(map.error(.invalidValue, at: spec.key("location"), "location must be MESH_EXTERNAL or MESH_INTERNAL"))
        }
        if entry.endpoints != nil, entry.workloadSelector != nil {
            errors.append(map.error(.invalidValue, at: spec.key("workloadSelector"), "endpoints and workloadSelector cannot both be set"))
        }
        for (i, endpoint) in (entry.endpoints ?? []).enumerated() {
            let path = spec.key("endpoints").index(i)
            let address = endpoint.address ?? ""
            if address.isEmpty, resolution != "DNS" { errors.append(map.error(.missingField, at: path.key("address"), "an endpoint needs an address")) }
            if resolution == "STATIC", !address.isEmpty, (try? SocketAddress(ipAddress: address, port: 0)) == nil {
                errors.append(map.error(.invalidValue, at: path.key("address"), "STATIC resolution takes IP addresses ('\(address)' is a name; use DNS)"))
            }
            for (name, _) in (endpoint.ports ?? [:]).sorted(by: { $0.key < $1.key }) where !names.contains(name) {
                errors.append(map.error(.invalidValue, at: path.key("ports").key(name), "'\(name)' is not one of the entry's port names"))
            }
            if let locality = endpoint.locality, Locality(parsing: locality) == nil {
                errors.append(map.error(.invalidValue, at: path.key("locality"), "'\(locality)' is not region/zone/subzone"))
            }
        }
        if resolution == "NONE", entry.workloadSelector == nil, (entry.endpoints ?? []).isEmpty {
            warnings.append(map.error(.istioDifference, at: spec.key("resolution"),
                "NONE without endpoints forwards to the connection's original destination, which a gateway does not have; EastWest declares no endpoint for it").asWarning)
        }
        if resolution.hasPrefix("DNS"), hosts.contains(where: { $0.contains("*") }) {
            errors.append(map.error(.invalidValue, at: spec.key("hosts"), "DNS resolution cannot use wildcard hosts"))
        }
        return (errors, warnings)
    }
}
