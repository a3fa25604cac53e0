import Foundation
import Testing

/// `memwal certs init` as an operator runs it, and `memwal serve` refusing TLS files that do not fit.
@Suite struct CertsCommandTests {
  @Test func certsInitWritesThenKeepsAndSaysWhich() throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let out = scratch.path + "/cluster/certs"
    let first = try runMemwal(["certs", "init", "--out", out, "--nodes", "n1,n2", "--controller"])
    #expect(first.status == 0, "\(first.stderr)")
    for file in ["ca.pem", "ca-key.pem", "n1.pem", "n1-key.pem", "n2.pem", "n2-key.pem", "controller.pem"] {
      #expect(first.stdout.contains("wrote \(out)/\(file)"), "\(first.stdout)")
    }
    let key = try FileManager.default.attributesOfItem(atPath: out + "/n1-key.pem")
    #expect((key[.posixPermissions] as? NSNumber)?.intValue == 0o600)
    let n1 = try String(contentsOfFile: out + "/n1.pem", encoding: .utf8)

    let second = try runMemwal(["certs", "init", "--out", out, "--nodes", "n1,n2,n3"])
    #expect(second.status == 0, "\(second.stderr)")
    #expect(second.stdout.contains("using the existing CA"))
    #expect(second.stdout.contains("wrote \(out)/n3.pem") && second.stdout.contains("kept \(out)/n1.pem"))
    #expect(try String(contentsOfFile: out + "/n1.pem", encoding: .utf8) == n1)

    let bad = try runMemwal(["certs", "init", "--out", out, "--nodes", "n1,Bad"])
    #expect(bad.status != 0 && bad.stderr.contains("node name \"Bad\""), "\(bad.stderr)")
  }

  @Test func serveRefusesAKeyThatDoesNotMatchItsCertificate() throws {
    let scratch = try ScratchDirectory()
    defer { scratch.remove() }
    let certs = scratch.path + "/certs"
    #expect(try runMemwal(["certs", "init", "--out", certs, "--nodes", "n1,n2"]).status == 0)
    let config = scratch.path + "/node.yaml"
    try """
    development_mode: true
    listen: 127.0.0.1:0
    data_dir: \(scratch.path)/data
    tls:
      certificate: \(certs)/n1.pem
      key: \(certs)/n2-key.pem
    """.write(toFile: config, atomically: true, encoding: .utf8)
    let result = try runMemwal(["serve", "--config", config], timeout: 60)
    #expect(result.status == 2)
    #expect(result.stderr.contains("tls.key") && result.stderr.contains("does not match"), "\(result.stderr)")
    #expect(
      !FileManager.default.fileExists(atPath: scratch.path + "/data"), "start-up went on past the check")
  }
}
