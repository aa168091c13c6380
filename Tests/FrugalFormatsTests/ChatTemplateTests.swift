// ChatTemplateTests: rendered conversations against transformers' apply_chat_template
// (fixture made by scripts/make_tokenizer_fixtures.py).

import Foundation
@testable import FrugalFormats
import XCTest

final class ChatTemplateTests: XCTestCase {
    /// One conversation and what transformers rendered.
    struct Case: Decodable {
        let messages: [ChatMessage]
        let add_generation_prompt: Bool
        let expected: String
    }

    /// A Jinja template, the family it belongs to, and its cases.
    struct Family: Decodable {
        let name: String
        let template: String
        let source: String
        let cases: [Case]
    }

    func families() throws -> [Family] {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("tokenizers/chat_templates.json")
        return try JSONDecoder().decode([Family].self, from: Data(contentsOf: url))
    }

    func testRenderingMatchesTransformers() throws {
        let families = try families()
        XCTAssertEqual(Set(families.map(\.template)), Set(ChatTemplate.allCases.map(\.rawValue)))
        for family in families {
            let template = try XCTUnwrap(ChatTemplate(rawValue: family.template))
            let system = ChatTemplate.defaultSystemPrompt(in: family.source)
            for item in family.cases {
                let rendered = template.render(item.messages, addGenerationPrompt: item.add_generation_prompt,
                                               defaultSystemPrompt: system)
                XCTAssertEqual(Array(rendered.utf8), Array(item.expected.utf8),
                               "\(family.name): \(rendered.debugDescription) != \(item.expected.debugDescription)")
            }
        }
    }

    func testDetectionFromTemplateSource() throws {
        for family in try families() {
            XCTAssertEqual(ChatTemplate.detect(from: family.source, architecture: nil)?.rawValue, family.template,
                           family.name)
        }
        XCTAssertNil(ChatTemplate.detect(from: "{{ messages }}", architecture: nil))
        XCTAssertNil(ChatTemplate.detect(from: nil, architecture: "llama"))
        XCTAssertEqual(ChatTemplate.detect(from: nil, architecture: "gemma2"), .gemma)
        XCTAssertEqual(ChatTemplate.detect(from: nil, architecture: "phi3"), .phi3)
        XCTAssertEqual(ChatTemplate.detect(from: nil, architecture: "qwen2"), .chatML)
        // Phi-3's older template builds the role marker from the role.
        let olderPhi3 = "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + message['content'] + '<|end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
        XCTAssertEqual(ChatTemplate.detect(from: olderPhi3, architecture: nil), .phi3)
    }

    func testDefaultSystemPrompt() throws {
        let sources = Dictionary(uniqueKeysWithValues: try families().map { ($0.name, $0.source) })
        XCTAssertEqual(ChatTemplate.defaultSystemPrompt(in: sources["smollm2"]),
                       "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        for name in ["plain", "llama3", "llama2", "phi3", "gemma3"] {
            XCTAssertNil(ChatTemplate.defaultSystemPrompt(in: sources[name]), name)
        }
        let qwen = "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
        XCTAssertEqual(ChatTemplate.defaultSystemPrompt(in: qwen),
                       "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
    }

    func testAssistantRangesCoverRepliesAndTheirEndMarkers() throws {
        for family in try families() {
            let template = try XCTUnwrap(ChatTemplate(rawValue: family.template))
            for item in family.cases {
                let rendered = template.renderWithAssistantRanges(item.messages,
                                                                  addGenerationPrompt: item.add_generation_prompt)
                let replies = item.messages.filter { $0.role == "assistant" }
                XCTAssertEqual(rendered.assistantRanges.count, replies.count, family.name)
                let bytes = Array(rendered.text.utf8)
                for (range, reply) in zip(rendered.assistantRanges, replies) {
                    // The reply (trimmed where the template trims it), then the end-of-turn marker.
                    let span = Array(bytes[range])
                    let matches = [reply.content, pythonStrip(reply.content)].contains { content in
                        template.stopStrings.contains { stop in
                            span == Array((content + stop).utf8) || span == Array((content + " " + stop).utf8)
                        }
                    }
                    XCTAssertTrue(matches, "\(family.name): \(String(decoding: span, as: UTF8.self).debugDescription)")
                }
            }
        }
    }

    func testSmolLM2ChatTemplateFromGGUF() throws {
        let gguf = try GGUFFile(path: try TokenizerTests.smolLM2Path())
        let source = gguf["tokenizer.chat_template"]?.string
        XCTAssertEqual(ChatTemplate.detect(from: source, architecture: gguf.architecture), .chatML)
        let system = ChatTemplate.defaultSystemPrompt(in: source)
        let text = ChatTemplate.chatML.render([ChatMessage(role: "user", content: "What is the capital of France?")],
                                              addGenerationPrompt: true, defaultSystemPrompt: system)
        XCTAssertEqual(text, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                           + "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    }

    func testStopStrings() {
        XCTAssertEqual(ChatTemplate.chatML.stopStrings.first, "<|im_end|>")
        XCTAssertEqual(ChatTemplate.llama3.stopStrings.first, "<|eot_id|>")
        XCTAssertEqual(ChatTemplate.llama2.stopStrings.first, "</s>")
        XCTAssertEqual(ChatTemplate.phi3.stopStrings.first, "<|end|>")
        XCTAssertEqual(ChatTemplate.gemma.stopStrings.first, "<end_of_turn>")
    }
}
