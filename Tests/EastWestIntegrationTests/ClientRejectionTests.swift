import Foundation
import MeshProxyCore
import Testing

@Suite("Who the gateway lets in (mTLS rejection matrix)", .serialized, .timeLimit(.minutes(3)))
struct ClientRejectionTests {
    @Test("No certificate, another root, expired and a foreign trust domain are refused with a TLS alert and one log line naming the reason; everyone else is still served")
    func rejectionMatrix() async throws {
        let mesh = try TestMesh("reject", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let (gateway, process) = try await mesh.startEchoCluster(block: 31)

        // Clients the gateway must refuse.
        let other = CertificateDirectory(path: "\(mesh.directory)/other-ca")
        try other.createRoot(trustDomain: "cluster.local")
        try other.createCluster("east")
        try other.createWorkload(cluster: "east", spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/client"),
                                 outputPath: "\(mesh.directory)/other-root-client")
        try mesh.certs.createWorkload(cluster: "east", spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/client"),
                                      outputPath: "\(mesh.directory)/expired-client", validity: .seconds(60),
                                      notBefore: Date().addingTimeInterval(-7200))
        try mesh.certs.createWorkload(cluster: "east", spiffeID: try SpiffeID(parsing: "spiffe://evil.example/ns/default/sa/client"),
                                      outputPath: "\(mesh.directory)/foreign-client")
        let cases: [(client: String, reason: String)] = [
            ("\(mesh.directory)/no-certificate", "no client certificate presented"),
            ("\(mesh.directory)/other-root-client", "certificate chain does not lead to the mesh root"),
            ("\(mesh.directory)/expired-client", "expired at"),
            ("\(mesh.directory)/foreign-client", "trust domain 'evil.example' of spiffe://evil.example/ns/default/sa/client is not allowed"),
        ]
        for (client, reason) in cases {
            let refused = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local", client: client)
            #expect(refused.status != 0, "\(client) was let in")
            #expect(refused.stderr.contains("alert") || refused.stderr.contains("SSL") || refused.stderr.contains("TLS"),
                    "curl did not report a TLS failure for \(client): \(refused.stderr)")
            #expect(await eventually { process.log.contains(reason) }, "no log line with '\(reason)'")
            // The gateway keeps serving mesh clients.
            let served = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local")
            #expect(mesh.answer(served)?["cluster"] == "east", "after \(client): \(served.stderr)")
        }
        #expect(process.isRunning)
    }
}
