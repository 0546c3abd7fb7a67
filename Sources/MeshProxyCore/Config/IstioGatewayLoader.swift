import Yams

extension IstioPolicyLoader {
    /// Valid Gateway fields (istio/api gateway.proto) EastWest does not carry out yet: they load
    /// with a warning naming them. Certificates come from the gateway's own `tls:` files.
    static let gatewayNotImplemented: Set<String> = [
        "bind", "defaultEndpoint", "targetPort", "httpsRedirect", "credentialName", "credentialNames", "serverCertificate",
        "privateKey", "caCertificates", "caCrl", "subjectAltNames", "verifyCertificateSpki", "verifyCertificateHash",
        "minProtocolVersion", "maxProtocolVersion", "cipherSuites", "tlsCertificates",
    ]

    static func readGateway(_ spec: Node, _ map: SourceMap, _ loaded: inout Loaded) -> [ConfigError] {
        readNamed(IstioGateway.self, kind: "Gateway", notImplemented: gatewayNotImplemented, spec: spec, map: map, loaded: &loaded,
                  check: { check($0, map: map) }) { gateway, loaded in
            loaded.gateways.append(gateway)
            loaded.gatewayOrigins.append("\(map.file):\(map.mark(of: FieldPath().key("spec"))?.line ?? 0)")
        }
    }

    /// What Istio's validation (pkg/config/validation `ValidateGateway`) rejects, and what it
    /// accepts but EastWest does not carry out.
    static func check(_ gateway: IstioGateway, map: SourceMap) -> (errors: [ConfigError], warnings: [ConfigError]) {
        var errors: [ConfigError] = []
        var warnings: [ConfigError] = []
        let spec = FieldPath().key("spec")
        let servers = gateway.servers ?? []
        if servers.isEmpty { errors.append(map.error(.missingField, at: spec.key("servers"), "a Gateway needs at least one server")) }
        for (i, server) in servers.enumerated() {
            let path = spec.key("servers").index(i)
            if let number = server.port?.number {
                if !(1...65_535).contains(number) { errors.append(map.error(.invalidValue, at: path.key("port").key("number"), "port must be 1-65535")) }
            } else {
                errors.append(map.error(.missingField, at: path.key("port").key("number"), "a server needs a port number"))
            }
            if let proto = server.port?.protocol, !IstioGateway.protocols.contains(proto.uppercased()) {
                errors.append(map.error(.invalidValue, at: path.key("port").key("protocol"),
                                        "'\(proto)' is not a Gateway protocol (\(IstioGateway.protocols.sorted().joined(separator: ", ")))"))
            }
            let hosts = server.hosts ?? []
            if hosts.isEmpty { errors.append(map.error(.missingField, at: path.key("hosts"), "a server needs at least one host")) }
            for (j, host) in hosts.enumerated() where GatewayHost(parsing: host, gatewayNamespace: gateway.namespace) == nil {
                errors.append(map.error(.invalidValue, at: path.key("hosts").index(j),
                                        "'\(host)' is not a Gateway host ([namespace/]name, the name '*' or starting with '*.')"))
            }
            guard let mode = server.tls?.mode else { continue }
            if !IstioGateway.modes.contains(mode) {
                errors.append(map.error(.invalidValue, at: path.key("tls").key("mode"), "'\(mode)' is not a TLS mode (\(IstioGateway.modes.sorted().joined(separator: ", ")))"))
            } else if mode != "ISTIO_MUTUAL", mode != "AUTO_PASSTHROUGH" {
                warnings.append(map.error(.notImplemented, at: path.key("tls").key("mode"),
                                          "\(mode) is valid but not carried out by EastWest yet: the server terminates Istio mTLS (ISTIO_MUTUAL)").asWarning)
            }
        }
        return (errors, warnings)
    }
}
