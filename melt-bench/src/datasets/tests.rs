//! The readers on the data sets melt ships (embedded from melt-bench's `data/`) and on
//! hand-made files whose content is known by construction.

use super::*;

fn file(text: &str, name: &str) -> (tempfile::TempDir, DataSource) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    (dir, p.into())
}

#[test]
fn the_papers_conversations_and_sustained_prompts() {
    let c = read_conversations(&Shipped::Conversations.into()).unwrap();
    assert_eq!(c.len(), 50);
    assert_eq!(c.iter().map(Vec::len).sum::<usize>(), 404);
    assert_eq!(c[0][0], "What's good lucky number for today?");
    let s = read_conversations(&Shipped::Sustained.into()).unwrap();
    assert_eq!((s.len(), s[0].len()), (1, 48));
}

#[test]
fn bad_conversation_files_are_named() {
    let err = |text: &str| {
        let (_d, p) = file(text, "conv.json");
        read_conversations(&p).unwrap_err().to_string()
    };
    let e = err("[[\"hi\"], [\"a\",");
    assert!(
        e.contains("conv.json") && e.contains("not JSON") && e.contains("line 1"),
        "{e}"
    );
    let e = err("[[\"hi\"], []]");
    assert!(e.contains("conversation 1 is empty"), "{e}");
    let e = err("[[\"hi\", 3]]");
    assert!(
        e.contains("conversation 0, prompt 1 is not a string"),
        "{e}"
    );
    let e = err("[[\"hi\", \"  \"]]");
    assert!(e.contains("prompt 1 is empty"), "{e}");
    assert!(err("[]").contains("no conversations"));
    assert!(err("{\"a\": 1}").contains("list of conversations"));
    assert!(matches!(
        read_conversations(&PathBuf::from("/no/such.json").into()),
        Err(DatasetError::Io(..))
    ));
}

#[test]
fn openbookqa_and_truthfulqa_as_released() {
    let p = Shipped::OpenBookQa.into();
    assert_eq!(McFormat::detect(&p).unwrap(), McFormat::OpenBookQa);
    let q = read_questions(&p, McFormat::OpenBookQa).unwrap();
    assert_eq!(q.len(), 500);
    assert!(q.iter().all(|q| q.choices.len() == 4 && q.answer < 4));
    assert_eq!(q[0].id, "8-343");
    assert_eq!(q[0].choices[q[0].answer], "quit eating lunch out");

    let p = Shipped::TruthfulQa.into();
    assert_eq!(McFormat::detect(&p).unwrap(), McFormat::TruthfulQaMc1);
    let q = read_questions(&p, McFormat::TruthfulQaMc1).unwrap();
    assert_eq!(q.len(), 817);
    assert_eq!(
        q[0].context,
        "What happens to you if you eat watermelon seeds?"
    );
    assert_eq!(
        q[0].choices[0],
        "The watermelon seeds pass through your digestive system"
    );
    assert!(q.iter().all(|q| q.answer == 0 && q.choices.len() >= 2));

    // The same file by path reads the same questions (a device run pushes the file).
    let on_disk = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/accuracy/openbookqa.jsonl");
    assert_eq!(
        read_questions(&on_disk.into(), McFormat::OpenBookQa)
            .unwrap()
            .len(),
        500
    );
}

#[test]
fn hellaswag_and_hand_made_questions() {
    let (_d, p) = file(
        "{\"ind\": 4, \"ctx\": \"A man is sitting on a roof. he\", \"endings\": [\"is using wrap\", \"is ripping level tiles off.\", \"is holding a rubik's cube.\", \"starts pulling up roofing\"], \"label\": \"3\"}\n",
        "hs.jsonl",
    );
    assert_eq!(McFormat::detect(&p).unwrap(), McFormat::HellaSwag);
    let q = read_questions(&p, McFormat::HellaSwag).unwrap();
    assert_eq!((q[0].answer, q[0].choices.len()), (3, 4));
    let (_d, p) = file(
        "{\"id\": \"q1\", \"question\": {\"stem\": \"2 + 2 =\", \"choices\": [{\"text\": \"3\", \"label\": \"A\"}, {\"text\": \"4\", \"label\": \"B\"}]}, \"answerKey\": \"B\"}\n\n",
        "arc.jsonl",
    );
    let q = read_questions(&p, McFormat::Arc).unwrap();
    assert_eq!(
        q,
        [Question {
            id: "q1".into(),
            context: "2 + 2 =".into(),
            choices: vec!["3".into(), "4".into()],
            answer: 1
        }]
    );
}

#[test]
fn bad_question_files_are_named() {
    let (_d, p) = file("Type,Question,Incorrect Answers\nx,Why?,No\n", "tqa.csv");
    let e = read_questions(&p, McFormat::TruthfulQaMc1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tqa.csv") && e.contains("no `Best Answer` column"),
        "{e}"
    );
    let (_d, p) = file(
        "Question,Best Answer,Incorrect Answers\nWhy?,Because,\n",
        "tqa.csv",
    );
    let e = read_questions(&p, McFormat::TruthfulQaMc1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tqa.csv:2") && e.contains("incorrect answer"),
        "{e}"
    );
    let (_d, p) = file(
        "{\"question\": {\"stem\": \"s\", \"choices\": [{\"text\": \"a\", \"label\": \"A\"}, {\"text\": \"b\", \"label\": \"B\"}]}, \"answerKey\": \"C\"}\n",
        "arc.jsonl",
    );
    let e = read_questions(&p, McFormat::Arc).unwrap_err().to_string();
    assert!(
        e.contains("arc.jsonl:1") && e.contains("answerKey `C`"),
        "{e}"
    );
    let (_d, p) = file(
        "{\"ctx\": \"c\", \"endings\": [\"a\", \"b\"], \"label\": 2}\n{oops\n",
        "hs.jsonl",
    );
    let e = read_questions(&p, McFormat::HellaSwag)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("hs.jsonl:1") && e.contains("label 2 but 2 endings"),
        "{e}"
    );
    let (_d, p) = file("\n\n", "empty.jsonl");
    let e = read_questions(&p, McFormat::Arc).unwrap_err().to_string();
    assert!(e.contains("no questions"), "{e}");
}

#[test]
fn limit_takes_a_seeded_subset_in_file_order() {
    let qs: Vec<Question> = (0..100)
        .map(|i| Question {
            id: i.to_string(),
            context: String::new(),
            choices: vec!["a".into(), "b".into()],
            answer: 0,
        })
        .collect();
    let a = limit(qs.clone(), 10, 7);
    assert_eq!(a.len(), 10);
    assert_eq!(
        a,
        limit(qs.clone(), 10, 7),
        "the same seed, the same subset"
    );
    assert_ne!(a, limit(qs.clone(), 10, 8));
    let ids: Vec<usize> = a.iter().map(|q| q.id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "file order: {ids:?}");
    assert_eq!(limit(qs.clone(), 1000, 7).len(), 100);
}

#[test]
fn accuracy_and_length_normalised_accuracy_as_lm_eval_scores() {
    let q = |choices: &[&str], answer| Question {
        id: String::new(),
        context: "c".into(),
        choices: choices.iter().map(|s| s.to_string()).collect(),
        answer,
    };
    let questions = [
        q(&["a", "bbbb"], 0),
        q(&["a", "bbbb"], 1),
        q(&["xx", "yy", "zz"], 2),
    ];
    // 1: "a" wins both ways. 2: raw picks "a" (-2 > -4), per byte "bbbb" (-1 > -2).
    // 3: a tie between the first two, below the answer's.
    let ll = [vec![-1.0, -8.0], vec![-2.0, -4.0], vec![-3.0, -3.0, -1.0]];
    let a = accuracy(&questions, &ll);
    assert_eq!(a.n, 3);
    assert!(
        (a.acc - 2.0 / 3.0).abs() < 1e-12 && (a.acc_norm - 1.0).abs() < 1e-12,
        "{a:?}"
    );
    // Outcomes 1, 0, 1: sample sd √(1/3), over √3.
    assert!((a.acc_stderr - (1.0f64 / 3.0).sqrt() / 3f64.sqrt()).abs() < 1e-12);
    assert_eq!(a.acc_norm_stderr, 0.0);
    // Ties go to the first choice.
    let t = accuracy(&[q(&["a", "b"], 1)], &[vec![-1.0, -1.0]]);
    assert_eq!(t.acc, 0.0);
}

#[test]
fn prompts_follow_lm_evaluation_harness() {
    let q = Question {
        id: "1".into(),
        context: "Which is a mammal?".into(),
        choices: vec!["a whale".into(), "a shark".into()],
        answer: 0,
    };
    assert_eq!(McFormat::OpenBookQa.prompt(&q), "Which is a mammal?");
    assert_eq!(
        McFormat::Arc.prompt(&q),
        "Question: Which is a mammal?\nAnswer:"
    );
    let tqa = McFormat::TruthfulQaMc1.prompt(&q);
    assert!(tqa.starts_with("Q: What is human life expectancy"));
    assert!(tqa.ends_with("Barcelona, Spain.\n\nQ: Which is a mammal?\nA:"));
    assert_eq!(
        hellaswag_preprocess("Roof shingle removal: A man is sitting on a roof. [title] He starts  [step] pulling up"),
        "Roof shingle removal: A man is sitting on a roof.. He starts  pulling up"
    );
}
